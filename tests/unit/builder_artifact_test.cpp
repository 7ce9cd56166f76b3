// The builder's artifacts: PackArtifact gives the same bytes for the same outputs whatever the
// mtimes, owners, modes and creation order on disk, a different digest for different content;
// UnpackArtifact restores files, directories, exec bits and in-root symlinks; outputs that are
// missing, escape the root or are special files are refused, and so are crafted archives that
// try to write outside the destination.

#include <archive.h>
#include <archive_entry.h>
#include <locale.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "artifact.h"
#include "harness.h"

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using muon::builder::ArtifactError;
using muon::builder::PackArtifact;
using muon::builder::Sha256FileHex;
using muon::builder::UnpackArtifact;
using muon::testing::TempDir;

namespace {

void WriteFile(const fs::path& path, const std::string& content, fs::perms perms) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary | std::ios::trunc) << content;
  fs::permissions(path, perms);
}

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

unsigned Mode(const fs::path& path) {
  struct stat st {};
  REQUIRE(::lstat(path.c_str(), &st) == 0);
  return st.st_mode & 07777;
}

const std::string kLongDir =
    "a-directory-name-long-enough/that-with-the-next-one/the-path-needs/"
    "a-pax-header-beyond-ustar-limits";

struct TreeVariant {
  bool reverse_order = false;
  fs::file_time_type mtime;
  fs::perms file_perms = fs::perms(0644);
  fs::perms exec_perms = fs::perms(0755);
  fs::perms dir_perms = fs::perms(0755);
  uid_t owner = 0;
};

// One service folder: dist/ (files, an executable, a nested dir, an in-root symlink, a
// non-ASCII name, a long path), bin/run, and src/ which is not an output.
void MakeTree(const fs::path& root, const TreeVariant& v) {
  struct File {
    std::string path;
    std::string content;
    bool executable;
  };
  std::vector<File> files = {
      {"dist/index.html", "<h1>hello</h1>\n", false},
      {"dist/app.js", "console.log('hi')\n", false},
      {"dist/assets/logo.svg", "<svg/>", false},
      {"dist/server", "#!/bin/sh\necho server\n", true},
      {"dist/\xc3\xbcnic\xc3\xb6"
       "de.txt",
       "utf-8 name", false},
      {"dist/" + kLongDir + "/deep.txt", "deep", false},
      {"dist/empty.txt", "", false},
      {"bin/run", "#!/bin/sh\nexec dist/server\n", true},
      {"src/main.ts", "source, not an output", false},
  };
  if (v.reverse_order) std::reverse(files.begin(), files.end());
  for (const auto& f : files) {
    WriteFile(root / f.path, f.content, f.executable ? v.exec_perms : v.file_perms);
  }
  fs::create_directories(root / "dist/empty-dir");
  fs::create_symlink("assets/logo.svg", root / "dist/logo.svg");
  fs::create_symlink("..", root / "dist/assets/up");
  for (const auto& entry : fs::recursive_directory_iterator(root)) {
    if (!entry.is_symlink()) fs::last_write_time(entry.path(), v.mtime);
    if (v.owner != 0) REQUIRE(::lchown(entry.path().c_str(), v.owner, v.owner) == 0);
    if (entry.is_directory() && !entry.is_symlink()) fs::permissions(entry.path(), v.dir_perms);
  }
}

const std::vector<std::string> kOutputs = {"dist", "bin/run"};

struct CraftedEntry {
  std::string path;
  unsigned type = AE_IFREG;
  std::string content_or_target;  // file content, or symlink target
  std::string hardlink;
};

// Writes a tar.gz the way an attacker would, with whatever paths they like.
void WriteCraftedTar(const fs::path& file, const std::vector<CraftedEntry>& entries) {
  std::unique_ptr<archive, int (*)(archive*)> a(archive_write_new(), archive_write_free);
  REQUIRE(archive_write_set_format_pax_restricted(a.get()) == ARCHIVE_OK);
  REQUIRE(archive_write_add_filter_gzip(a.get()) == ARCHIVE_OK);
  REQUIRE(archive_write_open_filename(a.get(), file.c_str()) == ARCHIVE_OK);
  for (const auto& e : entries) {
    std::unique_ptr<archive_entry, void (*)(archive_entry*)> entry(archive_entry_new(),
                                                                   archive_entry_free);
    archive_entry_set_pathname(entry.get(), e.path.c_str());
    archive_entry_set_filetype(entry.get(), e.type);
    archive_entry_set_perm(entry.get(), e.type == AE_IFDIR ? 0755 : 0644);
    if (!e.hardlink.empty()) archive_entry_set_hardlink(entry.get(), e.hardlink.c_str());
    if (e.type == AE_IFLNK) archive_entry_set_symlink(entry.get(), e.content_or_target.c_str());
    const bool has_data = e.type == AE_IFREG && e.hardlink.empty();
    if (has_data) archive_entry_set_size(entry.get(), e.content_or_target.size());
    REQUIRE(archive_write_header(a.get(), entry.get()) == ARCHIVE_OK);
    if (has_data) {
      REQUIRE(archive_write_data(a.get(), e.content_or_target.data(), e.content_or_target.size()) ==
              static_cast<la_ssize_t>(e.content_or_target.size()));
    }
  }
  REQUIRE(archive_write_close(a.get()) == ARCHIVE_OK);
}

// The message of the ArtifactError fn throws; any other exception fails the test.
template <typename F>
std::string ArtifactErrorOf(F&& fn) {
  try {
    fn();
  } catch (const ArtifactError& e) {
    return e.what();
  }
  return "(no ArtifactError)";
}

std::set<std::string> Listing(const fs::path& dir) {
  std::set<std::string> names;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    names.insert(entry.path().lexically_relative(dir).generic_string());
  }
  return names;
}

}  // namespace

TEST_CASE("PackArtifact is byte-for-byte reproducible", "[artifact]") {
  TempDir tmp{"muon-test-artifact"};
  const fs::path a = fs::path(tmp.path()) / "a";
  const fs::path b = fs::path(tmp.path()) / "b";
  MakeTree(a, {.mtime = fs::file_time_type::clock::now()});
  MakeTree(b, {.reverse_order = true,
               .mtime = fs::file_time_type::clock::now() - std::chrono::hours(24 * 365 * 7),
               .file_perms = fs::perms(0600),
               .exec_perms = fs::perms(0700),
               .dir_perms = fs::perms(0700),
               .owner = ::geteuid() == 0 ? 1234u : 0u});

  const auto first = PackArtifact(a, kOutputs, fs::path(tmp.path()) / "a1.tar.gz");
  const auto again = PackArtifact(a, kOutputs, fs::path(tmp.path()) / "a2.tar.gz");
  const auto other = PackArtifact(b, kOutputs, fs::path(tmp.path()) / "b.tar.gz");
  CHECK(first.digest.size() == 64);
  CHECK(first.digest == Sha256FileHex(fs::path(tmp.path()) / "a1.tar.gz"));
  CHECK(first.size == static_cast<int64_t>(fs::file_size(fs::path(tmp.path()) / "a1.tar.gz")));
  CHECK(first.files == 10);  // 8 files + 2 symlinks; src/ is not an output
  CHECK(again.digest == first.digest);
  CHECK(other.digest == first.digest);
  CHECK(other.size == first.size);
  CHECK(ReadFile(fs::path(tmp.path()) / "b.tar.gz") ==
        ReadFile(fs::path(tmp.path()) / "a1.tar.gz"));

  // gzip header (RFC 1952): magic, CM, FLG without FNAME, MTIME 0.
  const std::string bytes = ReadFile(fs::path(tmp.path()) / "a1.tar.gz");
  REQUIRE(bytes.size() > 10);
  CHECK(static_cast<unsigned char>(bytes[0]) == 0x1f);
  CHECK(static_cast<unsigned char>(bytes[1]) == 0x8b);
  CHECK((bytes[3] & 0x08) == 0);
  CHECK(bytes.substr(4, 4) == std::string(4, '\0'));

  SECTION("different content gives a different digest") {
    WriteFile(a / "dist/app.js", "console.log('hi!')\n", fs::perms(0644));
    CHECK(PackArtifact(a, kOutputs, fs::path(tmp.path()) / "c.tar.gz").digest != first.digest);
  }
  SECTION("an exec bit gives a different digest") {
    fs::permissions(a / "dist/app.js", fs::perms(0744));
    CHECK(PackArtifact(a, kOutputs, fs::path(tmp.path()) / "c.tar.gz").digest != first.digest);
  }
  SECTION("the locale does not change how a non-ASCII name is written") {
    // libarchive takes the charset of names from the thread's locale.
    const locale_t utf8 = ::newlocale(LC_ALL_MASK, "C.UTF-8", locale_t{});
    REQUIRE(utf8 != locale_t{});
    const locale_t previous = ::uselocale(utf8);
    std::string digest;
    try {
      digest = PackArtifact(a, kOutputs, fs::path(tmp.path()) / "c.tar.gz").digest;
    } catch (...) {
      ::uselocale(previous);
      ::freelocale(utf8);
      throw;
    }
    ::uselocale(previous);
    ::freelocale(utf8);
    CHECK(digest == first.digest);
  }
  SECTION("overlapping outputs pack each path once, in the same bytes") {
    const auto overlapping = PackArtifact(a, {"bin/run", "dist/assets", "./dist/", "dist"},
                                          fs::path(tmp.path()) / "c.tar.gz");
    CHECK(overlapping.digest == first.digest);
  }
}

TEST_CASE("UnpackArtifact restores what PackArtifact packed", "[artifact]") {
  TempDir tmp{"muon-test-artifact"};
  const fs::path root = fs::path(tmp.path()) / "service";
  const fs::path file = fs::path(tmp.path()) / "artifact.tar.gz";
  const fs::path dest = fs::path(tmp.path()) / "dest";
  MakeTree(root, {.mtime = fs::file_time_type::clock::now(), .file_perms = fs::perms(0600)});
  fs::create_directory(dest);

  SECTION("named outputs and their parents") {
    PackArtifact(root, kOutputs, file);
    UnpackArtifact(file, dest);
    CHECK(Listing(dest) ==
          std::set<std::string>{"bin", "bin/run", "dist", "dist/app.js", "dist/assets",
                                "dist/assets/logo.svg", "dist/assets/up", "dist/empty-dir",
                                "dist/empty.txt", "dist/index.html", "dist/logo.svg", "dist/server",
                                "dist/\xc3\xbcnic\xc3\xb6"
                                "de.txt",
                                "dist/a-directory-name-long-enough",
                                "dist/a-directory-name-long-enough/that-with-the-next-one",
                                "dist/a-directory-name-long-enough/that-with-the-next-one/"
                                "the-path-needs",
                                "dist/" + kLongDir, "dist/" + kLongDir + "/deep.txt"});
    CHECK(ReadFile(dest / "dist/index.html") == "<h1>hello</h1>\n");
    CHECK(ReadFile(dest / "dist" / kLongDir / "deep.txt") == "deep");
    CHECK(ReadFile(dest / "dist/\xc3\xbcnic\xc3\xb6"
                          "de.txt") == "utf-8 name");
    CHECK(ReadFile(dest / "dist/empty.txt").empty());
    CHECK(Mode(dest / "dist/server") == 0755);
    CHECK(Mode(dest / "bin/run") == 0755);
    CHECK(Mode(dest / "dist/app.js") == 0644);  // 0600 on disk, normalised
    CHECK(Mode(dest / "dist") == 0755);
    CHECK(Mode(dest / "dist/empty-dir") == 0755);
    REQUIRE(fs::is_symlink(dest / "dist/logo.svg"));
    CHECK(fs::read_symlink(dest / "dist/logo.svg") == "assets/logo.svg");
    CHECK(ReadFile(dest / "dist/logo.svg") == "<svg/>");
    CHECK(fs::read_symlink(dest / "dist/assets/up") == "..");
  }
  SECTION("\".\" packs the whole root") {
    const auto packed = PackArtifact(root, {"."}, file);
    CHECK(packed.files == 11);
    UnpackArtifact(file, dest);
    CHECK(ReadFile(dest / "src/main.ts") == "source, not an output");
    CHECK(Listing(dest) == Listing(root));
  }
  SECTION("a single file output") {
    PackArtifact(root, {"dist/server"}, file);
    UnpackArtifact(file, dest);
    CHECK(Listing(dest) == std::set<std::string>{"dist", "dist/server"});
    CHECK(Mode(dest / "dist/server") == 0755);
  }
  SECTION("the destination must be an empty directory") {
    PackArtifact(root, kOutputs, file);
    WriteFile(dest / "existing", "x", fs::perms(0644));
    CHECK_THROWS_WITH(UnpackArtifact(file, dest), Contains("not empty"));
    CHECK_THROWS_AS(UnpackArtifact(file, fs::path(tmp.path()) / "missing"), ArtifactError);
  }
}

TEST_CASE("PackArtifact refuses missing, escaping and special outputs", "[artifact]") {
  TempDir tmp{"muon-test-artifact"};
  const fs::path root = fs::path(tmp.path()) / "service";
  const fs::path file = fs::path(tmp.path()) / "artifact.tar.gz";
  MakeTree(root, {.mtime = fs::file_time_type::clock::now()});
  WriteFile(fs::path(tmp.path()) / "secret", "outside", fs::perms(0600));

  const auto refused = [&](const std::vector<std::string>& outputs, const std::string& message) {
    INFO("outputs[0] = " << (outputs.empty() ? std::string("(none)") : outputs.front()));
    CHECK_THAT(ArtifactErrorOf([&] { PackArtifact(root, outputs, file); }), Contains(message));
    CHECK_FALSE(fs::exists(file));
  };

  refused({"dist", "build"}, "build.outputs: \"build\" does not exist after the build");
  refused({"dist/missing/file"}, "\"dist/missing/file\" does not exist after the build");
  refused({"../secret"}, "\"../secret\" is outside the service folder");
  refused({"dist/../../secret"}, "\"dist/../../secret\" is outside the service folder");
  refused({"/etc"}, "\"/etc\" is outside the service folder");
  refused({""}, "is outside the service folder");

  SECTION("a symlink with an absolute target") {
    fs::create_symlink(fs::path(tmp.path()) / "secret", root / "dist/abs");
    refused({"dist"}, "\"dist/abs\" is a symlink to");
  }
  SECTION("a symlink whose relative target leaves the root") {
    fs::create_symlink("../../secret", root / "dist/rel");
    refused({"dist"}, "\"dist/rel\" is a symlink to \"../../secret\"");
  }
  SECTION("a symlink that leaves the root through an in-root symlink pointing upwards") {
    // Text-wise dist/secret; on disk assets/up is dist/ itself, so it resolves to tmp/secret.
    fs::create_symlink("assets/up/../../secret", root / "dist/sneaky");
    refused({"dist"}, "\"dist/sneaky\" is a symlink");
  }
  SECTION("an output that is itself an escaping symlink") {
    fs::create_symlink("../secret", root / "out");
    refused({"out"}, "\"out\" is a symlink to \"../secret\"");
  }
  SECTION("an output below a symlinked directory") {
    fs::create_symlink(tmp.path(), root / "linked");
    refused({"linked/secret"}, "goes through the symlink \"linked\"");
  }
  SECTION("a fifo") {
    REQUIRE(::mkfifo((root / "dist/pipe").c_str(), 0644) == 0);
    refused({"dist"}, "\"dist/pipe\" is a fifo");
  }
  SECTION("no outputs") {
    refused({}, "build.outputs is empty");
  }
  SECTION("the artifact file inside the root") {
    CHECK_THAT(ArtifactErrorOf([&] { PackArtifact(root, {"."}, root / "artifact.tar.gz"); }),
               Contains("must be outside the build root"));
  }
}

TEST_CASE("UnpackArtifact refuses crafted archives and writes nothing outside", "[artifact]") {
  TempDir tmp{"muon-test-artifact"};
  const fs::path dir = fs::path(tmp.path());
  const fs::path file = dir / "evil.tar.gz";
  const fs::path dest = dir / "dest";
  fs::create_directory(dest);
  fs::create_directory(dir / "sub");
  const std::set<std::string> before = Listing(dir);

  const auto refused = [&](const std::vector<CraftedEntry>& entries, const std::string& message) {
    WriteCraftedTar(file, entries);
    const std::set<std::string> with_tar = Listing(dir);
    CHECK_THAT(ArtifactErrorOf([&] { UnpackArtifact(file, dest); }), Contains(message));
    CHECK(fs::is_empty(dest));  // whatever came before the bad entry is removed again
    CHECK(Listing(dir) == with_tar);
  };
  const CraftedEntry harmless{.path = "ok.txt", .content_or_target = "fine"};

  SECTION("\"..\"") {
    refused({harmless, {.path = "../evil", .content_or_target = "pwned"}},
            "\"../evil\" contains \"..\"");
    refused({{.path = "a/../../evil", .content_or_target = "pwned"}}, "contains \"..\"");
  }
  SECTION("an absolute path") {
    const std::string absolute = (dir / "abs-evil").string();
    refused({harmless, {.path = absolute, .content_or_target = "pwned"}}, "has an absolute path");
    CHECK_FALSE(fs::exists(dir / "abs-evil"));
  }
  SECTION("symlinks leaving the destination") {
    refused({{.path = "link", .type = AE_IFLNK, .content_or_target = "/etc"}},
            "symlink to \"/etc\"");
    refused({{.path = "link", .type = AE_IFLNK, .content_or_target = "../sub"}},
            "symlink to \"../sub\"");
    // Text-wise inside (d/x), but d/p is dest itself, so d/p/.. is dest's parent.
    refused({{.path = "d", .type = AE_IFDIR},
             {.path = "d/p", .type = AE_IFLNK, .content_or_target = ".."},
             {.path = "s", .type = AE_IFLNK, .content_or_target = "d/p/../sub"}},
            "\"s\" is a symlink to \"d/p/../sub\"");
  }
  SECTION("writing through an in-root symlink") {
    refused({{.path = "d", .type = AE_IFDIR},
             {.path = "link", .type = AE_IFLNK, .content_or_target = "d"},
             {.path = "link/file", .content_or_target = "through"}},
            "unpacking \"link/file\"");
  }
  SECTION("a hard link") {
    refused({harmless, {.path = "hard", .hardlink = "ok.txt"}}, "\"hard\" is a hard link");
  }
  SECTION("a fifo or a device") {
    refused({{.path = "pipe", .type = AE_IFIFO}}, "\"pipe\" is not a file, directory or symlink");
    refused({{.path = "dev", .type = AE_IFCHR}}, "\"dev\" is not a file, directory or symlink");
  }
  SECTION("a path twice") {
    refused({{.path = "x", .type = AE_IFLNK, .content_or_target = "sub"},
             {.path = "x", .content_or_target = "replaced"}},
            "\"x\" appears twice");
  }
  SECTION("not an archive") {
    WriteFile(file, "just text", fs::perms(0644));
    CHECK_THROWS_AS(UnpackArtifact(file, dest), ArtifactError);
    CHECK(fs::is_empty(dest));
  }
  fs::remove(file);
  CHECK(Listing(dir) == before);
}
