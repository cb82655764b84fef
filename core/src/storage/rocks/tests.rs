//! Tests of the RocksDB backend, including crash tests that kill a writer process.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use super::{RocksOptions, RocksStore};
use crate::storage::StorageError;
use crate::storage::catalogue::{self, COUNTERS, DEVICES, USERS};
use crate::storage::conformance::check_backend;
use crate::storage::kv::{Direction, KeyRange, KvStore, WriteBatch};

fn options() -> RocksOptions {
    RocksOptions {
        sync_writes: false,
        block_cache_bytes: 8 * 1024 * 1024,
        max_open_files: 64,
    }
}

fn open(path: &Path) -> RocksStore {
    RocksStore::open(path, options()).unwrap()
}

#[test]
fn rocks_backend_conforms() {
    let dir = tempfile::tempdir().unwrap();
    check_backend(&open(dir.path()));
}

#[test]
fn rocks_backend_conforms_with_synced_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = RocksStore::open(
        dir.path(),
        RocksOptions {
            sync_writes: true,
            ..options()
        },
    );
    check_backend(&store.unwrap());
}

#[test]
fn reopening_keeps_every_column_family() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        for cf in catalogue::ALL {
            store.put(cf, b"key", cf.name.as_bytes()).unwrap();
        }
        store.delete(&USERS, b"key").unwrap();
    }
    let store = open(dir.path());
    for cf in catalogue::ALL {
        let expected = (cf.name != USERS.name).then(|| cf.name.as_bytes().to_vec());
        assert_eq!(store.get(cf, b"key").unwrap(), expected, "{}", cf.name);
    }
    assert!(store.unknown_column_families().is_empty());
}

#[test]
fn reopening_after_flush_reads_from_sst_files() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        let mut batch = WriteBatch::new();
        for n in 0_u32..1_000 {
            batch.put(&DEVICES, n.to_be_bytes().to_vec(), vec![7; 100]);
        }
        store.write(batch).unwrap();
        store.flush().unwrap();
        let stats = store.stats(&DEVICES).unwrap();
        assert!(stats.estimated_keys > 0, "{stats:?}");
        assert!(stats.bytes > 0, "{stats:?}");
        assert_eq!(store.stats(&USERS).unwrap().estimated_keys, 0);
    }
    let store = open(dir.path());
    let all = KeyRange::all();
    let reverse: Vec<_> = store
        .iter(&DEVICES, all, Direction::Reverse)
        .unwrap()
        .collect();
    assert_eq!(reverse.len(), 1_000);
    assert_eq!(
        reverse[0].as_ref().unwrap().0,
        999_u32.to_be_bytes().to_vec()
    );
    let bounded = KeyRange::half_open(10_u32.to_be_bytes().to_vec(), 13_u32.to_be_bytes().to_vec());
    let keys: Vec<_> = store
        .iter(&DEVICES, bounded, Direction::Reverse)
        .unwrap()
        .map(|entry| entry.unwrap().0)
        .collect();
    let expected: Vec<_> = [12_u32, 11, 10]
        .iter()
        .map(|n| n.to_be_bytes().to_vec())
        .collect();
    assert_eq!(keys, expected);
}

#[test]
fn stats_count_memtable_bytes_before_a_flush() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert_eq!(store.stats(&COUNTERS).unwrap().estimated_keys, 0);
    store.put(&COUNTERS, b"c", b"1").unwrap();
    let stats = store.stats(&COUNTERS).unwrap();
    assert_eq!(stats.estimated_keys, 1);
    assert!(stats.bytes > 0);
}

#[test]
fn second_open_in_the_same_process_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let _store = open(dir.path());
    let err = RocksStore::open(dir.path(), options()).unwrap_err();
    assert!(
        matches!(&err, StorageError::InUse { path } if path == dir.path()),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("in use by another axon process"),
        "{err}"
    );
}

#[test]
fn other_open_failures_name_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-directory");
    std::fs::write(&file, b"").unwrap();
    let err = RocksStore::open(&file, options()).unwrap_err();
    assert!(matches!(err, StorageError::Backend(_)), "{err:?}");
    assert!(err.to_string().contains("not-a-directory"), "{err}");
}

#[test]
fn column_families_of_a_newer_build_are_opened_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut raw_options = rocksdb::Options::default();
        raw_options.create_if_missing(true);
        raw_options.create_missing_column_families(true);
        let raw = rocksdb::DB::open_cf(&raw_options, dir.path(), ["meta", "from_the_future"]);
        let raw = raw.unwrap();
        let future = raw.cf_handle("from_the_future").unwrap();
        raw.put_cf(future, b"k", b"v").unwrap();
    }
    {
        let store = open(dir.path());
        assert_eq!(
            store.unknown_column_families(),
            ["from_the_future".to_owned()]
        );
        store.put(&USERS, b"u", b"1").unwrap();
    }
    let names = rocksdb::DB::list_cf(&rocksdb::Options::default(), dir.path()).unwrap();
    assert!(
        names.iter().any(|name| name == "from_the_future"),
        "{names:?}"
    );
    assert!(
        catalogue::ALL
            .iter()
            .all(|cf| names.iter().any(|name| name == cf.name))
    );
}

// ---- Tests that run a second copy of this test binary as a child process. ----

/// The environment variable that turns a test into its child role; its value is the
/// database directory.
const CHILD_DB_ENV: &str = "AXON_STORAGE_TEST_CHILD_DB";

const CHILD_DEADLINE: Duration = Duration::from_secs(120);

/// The full name of a test of this module, as the test harness knows it.
fn test_name(name: &str) -> String {
    let module = module_path!();
    let module = module
        .split_once("::")
        .map_or(module, |(_crate, rest)| rest);
    format!("{module}::{name}")
}

/// Runs the test `name` of this binary alone, in a child process that sees `db` in
/// [`CHILD_DB_ENV`].
fn spawn_child(name: &str, db: &Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            &test_name(name),
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DB_ENV, db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// The child's stdout lines, read on a thread so the parent can wait with a deadline.
fn lines_of(stdout: ChildStdout) -> Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    receiver
}

/// What follows `marker` on a line of the child's output. The test harness prints the test's
/// name before running it without ending the line, so a marker need not start its line.
fn after_marker<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    line.rfind(marker).map(|at| &line[at + marker.len()..])
}

/// Waits for the next line for which `wanted` returns `Some`, failing at `deadline`.
fn next_line<T>(
    lines: &Receiver<String>,
    deadline: Instant,
    child: &mut Child,
    mut wanted: impl FnMut(&str) -> Option<T>,
) -> T {
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(remaining) {
            Ok(line) => {
                if let Some(found) = wanted(&line) {
                    return found;
                }
            }
            Err(err) => {
                let _ = child.kill();
                let status = child.wait();
                panic!("child stopped talking ({err}); exit status {status:?}");
            }
        }
    }
}

/// Child role: holds the database open until its stdin closes.
fn hold_database_open(db: &Path) {
    let _store = open(db);
    println!("READY");
    std::io::stdout().flush().unwrap();
    let mut rest = Vec::new();
    std::io::stdin().read_to_end(&mut rest).unwrap();
}

#[test]
fn open_while_another_process_has_the_database_is_refused_clearly() {
    if let Some(db) = std::env::var_os(CHILD_DB_ENV) {
        return hold_database_open(Path::new(&db));
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn_child(
        "open_while_another_process_has_the_database_is_refused_clearly",
        dir.path(),
    );
    let lines = lines_of(child.stdout.take().unwrap());
    let deadline = Instant::now() + CHILD_DEADLINE;
    next_line(&lines, deadline, &mut child, |line| {
        after_marker(line, "READY").map(drop)
    });

    let err = RocksStore::open(dir.path(), options()).unwrap_err();
    assert!(
        matches!(&err, StorageError::InUse { path } if path == dir.path()),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("in use by another axon process"),
        "{err}"
    );

    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    // The lock goes with the process that held it.
    open(dir.path());
}

/// Crash rounds: each starts a writer on the database the last one left, kills it, and
/// checks the result, so recovery after a crash is itself crashed into.
const ROUNDS: u64 = 5;
/// How many acknowledged batches the parent waits for in each round before killing the writer.
const ACKS_PER_ROUND: u64 = 60;
/// The writer stops by itself after this many batches if nobody kills it.
const WRITER_MAX_BATCHES: u64 = 1_000_000;
/// Keys of one batch in the `USERS` family (plus one in `DEVICES` and a counter).
const KEYS_PER_BATCH: u32 = 4;

fn batch_key(n: u64, i: u32) -> Vec<u8> {
    format!("batch/{n:010}/{i}").into_bytes()
}

/// Child role: writes numbered batches spanning three column families with synced writes,
/// continuing after the last batch present, and prints `ACK n` once batch `n`'s write has
/// returned.
fn write_batches_until_killed(db: &Path) {
    let options = RocksOptions {
        sync_writes: true,
        ..options()
    };
    let store = RocksStore::open(db, options).unwrap();
    let first = match store.get(&COUNTERS, b"last").unwrap() {
        Some(last) => u64::from_be_bytes(last.try_into().unwrap()) + 1,
        None => 0,
    };
    let mut stdout = std::io::stdout();
    for n in first..WRITER_MAX_BATCHES {
        let mut batch = WriteBatch::new();
        for i in 0..KEYS_PER_BATCH {
            batch.put(&USERS, batch_key(n, i), n.to_be_bytes().to_vec());
        }
        batch.put(&DEVICES, batch_key(n, 0), n.to_be_bytes().to_vec());
        batch.put(&COUNTERS, b"last".to_vec(), n.to_be_bytes().to_vec());
        store.write(batch).unwrap();
        writeln!(stdout, "ACK {n}").unwrap();
        stdout.flush().unwrap();
    }
}

/// Checks that the batches in `db` are exactly `0..=last`, each whole, and returns `last`.
fn whole_batches(db: &Path) -> u64 {
    let store = open(db);
    let mut batches = std::collections::BTreeMap::<u64, u32>::new();
    for entry in store.scan_prefix(&USERS, b"batch/").unwrap() {
        let (key, value) = entry.unwrap();
        let n = u64::from_be_bytes(value.try_into().unwrap());
        assert!(
            key.starts_with(format!("batch/{n:010}/").as_bytes()),
            "{key:?}"
        );
        *batches.entry(n).or_default() += 1;
    }
    let last = *batches.keys().next_back().unwrap();
    let numbers: Vec<u64> = batches.keys().copied().collect();
    assert_eq!(
        numbers,
        (0..=last).collect::<Vec<_>>(),
        "a batch is missing"
    );
    for (n, count) in &batches {
        assert_eq!(*count, KEYS_PER_BATCH, "batch {n} is half-present");
        let device = store.get(&DEVICES, &batch_key(*n, 0)).unwrap();
        assert_eq!(
            device,
            Some(n.to_be_bytes().to_vec()),
            "batch {n} is half-present"
        );
    }
    let devices = store.scan_prefix(&DEVICES, b"batch/").unwrap().count();
    assert_eq!(devices as u64, last + 1, "a batch is half-present");
    let counter = store.get(&COUNTERS, b"last").unwrap();
    assert_eq!(
        counter,
        Some(last.to_be_bytes().to_vec()),
        "a batch is half-present"
    );
    last
}

#[test]
fn acknowledged_batches_survive_kill_9_whole() {
    if let Some(db) = std::env::var_os(CHILD_DB_ENV) {
        return write_batches_until_killed(Path::new(&db));
    }
    let dir = tempfile::tempdir().unwrap();
    let deadline = Instant::now() + CHILD_DEADLINE;
    let mut next = 0;
    for round in 0..ROUNDS {
        let mut child = spawn_child("acknowledged_batches_survive_kill_9_whole", dir.path());
        let lines = lines_of(child.stdout.take().unwrap());
        let mut acked = None;
        for _ in 0..ACKS_PER_ROUND {
            let n = next_line(&lines, deadline, &mut child, |line| {
                after_marker(line, "ACK ").map(|n| n.parse::<u64>().unwrap())
            });
            // The writer resumes right after the last batch the previous round left.
            let expected = acked.map_or(next, |last| last + 1);
            assert_eq!(n, expected, "round {round}: acknowledgements out of order");
            acked = Some(n);
        }
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert_eq!(
            status.signal(),
            Some(9),
            "the writer must die mid-run: {status:?}"
        );

        let acked = acked.unwrap();
        let last = whole_batches(dir.path());
        assert!(
            last >= acked,
            "round {round}: acknowledged batch {acked} lost (last {last})"
        );
        next = last + 1;
    }
}
