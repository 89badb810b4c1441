//! Ctrl-C on `peftspace run`, in the synthetic development mode (trials of 20 s cut into 10 ms steps): the first
//! SIGINT stops the trials in flight after their current step, stores nothing partial and exits 130 within a
//! moment; a second one kills the workers at once; no worker process survives the run either way; a rerun resumes.

use crate::refine_support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A trial takes this long unless stopped: far longer than the test waits.
const TRIAL_MS: u64 = 20_000;

fn peftspace() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_peftspace"));
    c.env("PEFTSPACE_EXECUTOR", "synthetic")
        .env_remove("PEFTSPACE_SYNTHETIC_DIVERGE")
        .env_remove("PEFTSPACE_SYNTHETIC_FAIL")
        .env_remove("PEFTSPACE_SYNTHETIC_LOG");
    c
}

fn start(exp: &Path, out: &Path, jobs: usize) -> Child {
    peftspace()
        .arg("run")
        .arg(exp)
        .arg("--out")
        .arg(out)
        .arg("--jobs")
        .arg(jobs.to_string())
        .env("PEFTSPACE_SYNTHETIC_SLEEP_MS", TRIAL_MS.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn")
}

/// The pids whose parent is `parent` (from /proc).
fn children_of(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`; comm may hold spaces, so read after the last ')'.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let ppid = after
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) {
            out.push(pid);
        }
    }
    out
}

/// Whether `pid` is still a live (not zombie) process.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next());
            state != Some("Z") && state != Some("X")
        }
        Err(_) => false,
    }
}

fn interrupt(child: &Child) {
    // SAFETY: sending a signal to a process we started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
}

/// Waits for the exit code, failing when the run takes longer than `limit`.
fn exit_within(child: &mut Child, limit: Duration) -> (Option<i32>, String) {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut stderr = String::new();
            use std::io::Read;
            let _ = child
                .stderr
                .take()
                .map(|mut s| s.read_to_string(&mut stderr));
            return (status.code(), stderr);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("the run did not stop within {limit:?} of Ctrl-C");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Starts a run with `jobs` workers, waits until its trials are under way, and returns it with its workers' pids.
fn started_run(exp: &Path, out: &Path, jobs: usize) -> (Child, Vec<u32>) {
    let mut child = start(exp, out, jobs);
    let deadline = Instant::now() + Duration::from_secs(30);
    // `--jobs 1` trains in the run's own process: no workers.
    let expected = if jobs > 1 { jobs } else { 0 };
    let workers = loop {
        let workers = children_of(child.id());
        if workers.len() >= expected {
            break workers;
        }
        assert!(Instant::now() < deadline, "the workers did not start");
        assert!(
            child.try_wait().expect("wait").is_none(),
            "the run ended early"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    // Let the trials get going (several 10 ms steps).
    std::thread::sleep(Duration::from_millis(700));
    (child, workers)
}

fn assert_all_gone(workers: &[u32]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while workers.iter().any(|&w| alive(w)) {
        assert!(
            Instant::now() < deadline,
            "a worker outlived the run: {workers:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stored(out: &Path) -> usize {
    std::fs::read_to_string(out.join("trials.jsonl")).map_or(0, |t| t.lines().count())
}

#[test]
fn one_ctrl_c_stops_after_the_current_step_stores_nothing_partial_and_exits_130() {
    let work = tempfile::tempdir().unwrap();
    let exp = work.path().join("exp.ron");
    std::fs::write(&exp, refine_support::experiment_ron(2)).unwrap();
    for jobs in [1, 2] {
        let out = work.path().join(format!("out-{jobs}"));
        let (mut child, workers) = started_run(&exp, &out, jobs);
        assert_eq!(workers.len(), if jobs > 1 { jobs } else { 0 });
        interrupt(&child);
        // Stopping after the current 10 ms step, not after the 20 s trial.
        let (code, stderr) = exit_within(&mut child, Duration::from_secs(10));
        assert_eq!(code, Some(130), "jobs {jobs}: {stderr}");
        assert!(stderr.contains("interrupt"), "{stderr}");
        assert_eq!(stored(&out), 0, "jobs {jobs}: a stopped trial was stored");
        assert_all_gone(&workers);
    }
    // The rerun (fast trials now) completes every trial exactly once.
    let out = work.path().join("out-2");
    let status = peftspace()
        .arg("run")
        .arg(&exp)
        .arg("--out")
        .arg(&out)
        .arg("--jobs")
        .arg("2")
        .env("PEFTSPACE_SYNTHETIC_SLEEP_MS", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let text = std::fs::read_to_string(out.join("trials.jsonl")).unwrap();
    let ids: Vec<String> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].to_string())
        .collect();
    let unique: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "a trial was stored twice");
    assert!(!ids.is_empty());
}

#[test]
fn two_ctrl_c_kill_the_workers_at_once_and_leave_no_orphan() {
    let work = tempfile::tempdir().unwrap();
    let exp = work.path().join("exp.ron");
    std::fs::write(&exp, refine_support::experiment_ron(2)).unwrap();
    let out = work.path().join("out");
    let (mut child, workers) = started_run(&exp, &out, 2);
    interrupt(&child);
    interrupt(&child);
    let (code, stderr) = exit_within(&mut child, Duration::from_secs(10));
    assert_eq!(code, Some(130), "{stderr}");
    assert_all_gone(&workers);
    assert_eq!(stored(&out), 0);
}

#[test]
fn a_killed_parent_takes_its_workers_with_it() {
    let work = tempfile::tempdir().unwrap();
    let exp = work.path().join("exp.ron");
    std::fs::write(&exp, refine_support::experiment_ron(2)).unwrap();
    let out = work.path().join("out");
    let (mut child, workers) = started_run(&exp, &out, 2);
    child.kill().unwrap();
    child.wait().unwrap();
    assert_all_gone(&workers);
}

/// Ctrl-C after some trials are stored: the stored ones are kept and reused, the interrupted stage prints no
/// decision, and the resumed run finishes every trial exactly once. (The resume check above starts from an empty
/// store; this one fails if a resume re-ran stored trials, dropped them, or an interrupted stage printed a winner.)
#[test]
fn ctrl_c_after_stored_trials_keeps_them_and_the_resume_reuses_them() {
    let work = tempfile::tempdir().unwrap();
    let exp = work.path().join("exp.ron");
    std::fs::write(&exp, refine_support::experiment_ron(4)).unwrap();
    let out = work.path().join("out");
    let mut child = peftspace()
        .arg("run")
        .arg(&exp)
        .arg("--out")
        .arg(&out)
        .env("PEFTSPACE_SYNTHETIC_SLEEP_MS", "150")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(60);
    while stored(&out) < 3 {
        assert!(Instant::now() < deadline, "no trial was stored in time");
        assert!(
            child.try_wait().expect("wait").is_none(),
            "the run ended early"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    interrupt(&child);
    let output = child.wait_with_output().expect("wait");
    assert_eq!(output.status.code(), Some(130));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stdout.contains("chose `") && !stderr.contains("chose `"),
        "an interrupted stage printed a decision:\n{stdout}\n{stderr}"
    );
    let before = std::fs::read_to_string(out.join("trials.jsonl")).unwrap();
    let kept = before.lines().count();
    assert!(kept >= 3, "{kept}");
    let resumed = peftspace()
        .arg("run")
        .arg(&exp)
        .arg("--out")
        .arg(&out)
        .env("PEFTSPACE_SYNTHETIC_SLEEP_MS", "0")
        .output()
        .unwrap();
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(
        stderr.contains(&format!("resuming: {kept} trials already stored")),
        "{stderr}"
    );
    let after = std::fs::read_to_string(out.join("trials.jsonl")).unwrap();
    assert!(
        after.starts_with(&before),
        "the stored lines were rewritten"
    );
    let ids: Vec<String> = after
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].to_string())
        .collect();
    let unique: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "a trial was stored twice");
    assert!(ids.len() > kept, "the resume trained nothing");
}
