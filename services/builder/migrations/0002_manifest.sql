-- What the scheduler needs to make a release from a build, kept on the build.
--   manifest: the service's muon.yaml at the commit (set when the build succeeds, reused or not).
--   default_branch: whether the request that created the build was for the repo's default branch
--     or an explicit deploy: the release candidate handed over when the build succeeds goes live
--     (false: a preview version of its branch).
--   handovers: release candidates asked for while the build was queued or running (the same
--     commit pushed to another branch, an explicit deploy), each "<ref> live" or "<ref> preview";
--     handed over, after the build's own, when it succeeds.
ALTER TABLE builds
  ADD COLUMN manifest text NOT NULL DEFAULT '',
  ADD COLUMN default_branch boolean NOT NULL DEFAULT true,
  ADD COLUMN handovers text[] NOT NULL DEFAULT '{}';
