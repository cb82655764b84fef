//! Finding (and if needed building) the `axon` binary under test.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// Environment variable naming a prebuilt `axon` binary to test.
const AXON_BIN_ENV: &str = "AXON_BIN";
/// How much of a failed build's output to show.
const BUILD_LOG_TAIL_LINES: usize = 80;

/// Where the test binary's target directory and profile are, derived from
/// the path of the running test executable.
#[derive(Debug, PartialEq, Eq)]
struct BuildLayout {
    /// The `--target-dir` root (the directory holding `CACHEDIR.TAG`).
    target_dir: PathBuf,
    /// A target triple when the tests were built with `--target`.
    triple: Option<String>,
    /// The profile directory name: `debug`, `release` or a custom profile.
    profile_dir: String,
}

impl BuildLayout {
    /// Derives the layout from `<target>[/<triple>]/<profile>/deps/<exe>`.
    fn from_test_exe(exe: &Path) -> Option<BuildLayout> {
        let deps = exe.parent()?;
        let profile = deps.parent()?;
        let profile_dir = profile.file_name()?.to_str()?.to_owned();
        let above = profile.parent()?;
        // Cargo puts CACHEDIR.TAG at the root of the target directory only;
        // if it is one level further up, the level between is a triple.
        if !above.join("CACHEDIR.TAG").exists()
            && let Some(root) = above.parent()
            && root.join("CACHEDIR.TAG").exists()
        {
            return Some(BuildLayout {
                target_dir: root.to_owned(),
                triple: Some(above.file_name()?.to_str()?.to_owned()),
                profile_dir,
            });
        }
        Some(BuildLayout {
            target_dir: above.to_owned(),
            triple: None,
            profile_dir,
        })
    }

    /// The cargo arguments selecting the same profile and target.
    fn cargo_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec!["--target-dir".into(), self.target_dir.clone().into()];
        match self.profile_dir.as_str() {
            "debug" => {}
            "release" => args.push("--release".into()),
            other => {
                args.push("--profile".into());
                args.push(other.into());
            }
        }
        if let Some(triple) = &self.triple {
            args.push("--target".into());
            args.push(triple.into());
        }
        args
    }

    /// Where cargo leaves the `axon` binary for this layout.
    fn binary_path(&self) -> PathBuf {
        let mut path = self.target_dir.clone();
        if let Some(triple) = &self.triple {
            path.push(triple);
        }
        path.push(&self.profile_dir);
        path.push(format!("axon{}", std::env::consts::EXE_SUFFIX));
        path
    }
}

/// The path of the `axon` binary under test.
///
/// `$AXON_BIN` if set; otherwise `cargo build -p axon-homeserver --bin axon`
/// runs once per test process, with the profile (and target, if any) of the
/// running test binary, so the server and the tests come from the same
/// source tree. The first build in a fresh target directory compiles
/// RocksDB and takes minutes, silently (libtest reports the test as running
/// long). Panics with the build's output if it fails: no test can run
/// without it.
pub fn axon_binary() -> &'static Path {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BINARY.get_or_init(locate_or_build) {
        Ok(path) => path,
        Err(message) => panic!("cannot get the axon binary: {message}"),
    }
}

fn locate_or_build() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(AXON_BIN_ENV) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "${AXON_BIN_ENV} = {} is not a file",
                path.display()
            ))
        };
    }
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let layout = BuildLayout::from_test_exe(&exe)
        .ok_or_else(|| format!("cannot derive the target dir from {}", exe.display()))?;
    // Cargo sets CARGO for the processes it runs; fall back to the one that
    // built this crate, then to whatever is on PATH.
    let cargo = std::env::var_os("CARGO")
        .or_else(|| option_env!("CARGO").map(OsString::from))
        .unwrap_or_else(|| "cargo".into());
    let output = Command::new(&cargo)
        .args(["build", "-p", "axon-homeserver", "--bin", "axon"])
        .args(layout.cargo_args())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        // Captured rather than inherited: every test binary runs this, and
        // replayed warnings of the server's crates would bury the test
        // output. The output is shown when the build fails.
        .output()
        .map_err(|e| format!("running {}: {e}", cargo.to_string_lossy()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        let tail = lines[lines.len().saturating_sub(BUILD_LOG_TAIL_LINES)..].join("\n");
        return Err(format!(
            "cargo build of axon failed ({}):\n{tail}",
            output.status
        ));
    }
    let path = layout.binary_path();
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "cargo build succeeded but {} is missing",
            path.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_target(with_triple: bool) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("CACHEDIR.TAG"), "").unwrap();
        let mut deps = dir.path().to_owned();
        if with_triple {
            deps.push("x86_64-unknown-linux-gnu");
        }
        deps.push("release");
        deps.push("deps");
        std::fs::create_dir_all(&deps).unwrap();
        (dir, deps.join("login-0123abcd"))
    }

    #[test]
    fn layout_of_a_plain_profile() {
        let (dir, exe) = fake_target(false);
        let layout = BuildLayout::from_test_exe(&exe).unwrap();
        assert_eq!(
            layout,
            BuildLayout {
                target_dir: dir.path().to_owned(),
                triple: None,
                profile_dir: "release".to_owned(),
            }
        );
        assert_eq!(
            layout.binary_path(),
            dir.path().join("release").join("axon")
        );
        let args: Vec<String> = layout
            .cargo_args()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert_eq!(
            args,
            vec![
                "--target-dir".to_owned(),
                dir.path().display().to_string(),
                "--release".to_owned()
            ]
        );
    }

    #[test]
    fn layout_with_a_target_triple() {
        let (dir, exe) = fake_target(true);
        let layout = BuildLayout::from_test_exe(&exe).unwrap();
        assert_eq!(layout.target_dir, dir.path());
        assert_eq!(layout.triple.as_deref(), Some("x86_64-unknown-linux-gnu"));
        assert_eq!(
            layout.binary_path(),
            dir.path()
                .join("x86_64-unknown-linux-gnu")
                .join("release")
                .join("axon")
        );
        let args = layout.cargo_args();
        assert!(args.contains(&OsString::from("--target")), "{args:?}");
    }

    #[test]
    fn custom_profiles_are_passed_by_name() {
        let layout = BuildLayout {
            target_dir: PathBuf::from("/t"),
            triple: None,
            profile_dir: "ci".to_owned(),
        };
        let args = layout.cargo_args();
        assert_eq!(
            args[2..],
            [OsString::from("--profile"), OsString::from("ci")]
        );
    }
}
