#!/usr/bin/env bash
# Validates compose.yaml against docker/Dockerfile (CTest: tooling.compose_config).
#   check_compose.sh <repo root>
# - docker-compose accepts the file (docker-compose config -q; no Docker engine needed);
# - every service built from docker/Dockerfile names a target that the Dockerfile defines, and
#   every service stage of the Dockerfile (FROM runtime-base AS <name>) is used by a service;
# - services built from the repo scale: no container_name, no single fixed host port.
set -euo pipefail

root=${1:?usage: check_compose.sh <repo root>}
compose="$root/compose.yaml"
dockerfile="$root/docker/Dockerfile"
fail() {
  echo "check_compose: FAIL: $*" >&2
  exit 1
}
[[ -f $compose ]] || fail "$compose not found"
[[ -f $dockerfile ]] || fail "$dockerfile not found"
command -v docker-compose >/dev/null 2>&1 ||
  fail "docker-compose is not installed (Debian package docker-compose; scripts/test installs it)"
# docker-compose is Python and depends on Debian's python3-yaml; use that interpreter.
py=/usr/bin/python3
if [[ ! -x $py ]] || ! "$py" -c 'import yaml' 2>/dev/null; then
  fail "$py with the yaml module is missing (it comes with Debian's docker-compose)"
fi

docker-compose -f "$compose" config -q || fail "docker-compose rejects $compose (see above)"
resolved=$(mktemp)
trap 'rm -f "$resolved"' EXIT
docker-compose -f "$compose" config >"$resolved" || fail "docker-compose config failed"

"$py" - "$resolved" "$dockerfile" <<'PYEOF' || exit 1
import os, re, sys, yaml

resolved, dockerfile = sys.argv[1], sys.argv[2]
with open(resolved) as f:
    config = yaml.safe_load(f)
stages, service_stages = set(), set()
for line in open(dockerfile):
    m = re.match(r'\s*FROM\s+(\S+)\s+AS\s+(\S+)\s*$', line, re.IGNORECASE)
    if m:
        stages.add(m.group(2))
        if m.group(1) == 'runtime-base':
            service_stages.add(m.group(2))

errors, used = [], set()
for name, svc in (config.get('services') or {}).items():
    build = svc.get('build')
    if build is None:
        continue  # an image (nats, postgres): stateful, not scaled
    if isinstance(build, str):
        build = {'context': build}
    context = build.get('context', '.')
    df = os.path.normpath(os.path.join(context, build.get('dockerfile', 'Dockerfile')))
    if df == os.path.normpath(dockerfile):
        target = build.get('target')
        if not target:
            errors.append(f'{name}: builds docker/Dockerfile without a target')
        elif target not in stages:
            errors.append(f'{name}: target "{target}" is not a stage of docker/Dockerfile '
                          f'(stages: {", ".join(sorted(stages))})')
        else:
            used.add(target)
    if 'container_name' in svc:
        errors.append(f'{name}: container_name prevents docker compose up --scale {name}=N')
    for port in svc.get('ports') or []:
        published = None
        if isinstance(port, dict):
            published = port.get('published')
            port = f"{published}:{port.get('target')}"
        else:
            parts = str(port).split('/')[0].split(':')
            if len(parts) >= 2:
                published = parts[-2]
        if published not in (None, '') and '-' not in str(published):
            errors.append(f'{name}: port "{port}" fixes host port {published}, so only one '
                          f'process of {name} can run; publish the container port only or a range')

for stage in sorted(service_stages - used):
    errors.append(f'docker/Dockerfile stage "{stage}" is not built by any compose service')

for e in errors:
    print(f'check_compose: FAIL: {e}', file=sys.stderr)
if errors:
    sys.exit(1)
print(f'check_compose: ok ({len(config.get("services") or {})} services, '
      f'{len(used)} built from docker/Dockerfile)')
PYEOF
