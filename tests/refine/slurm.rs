//! `run --executor slurm` against a real single-node Slurm (started by `scripts/slurm-start.sh`; `.ci/run` does it
//! and exports `SLURM_CONF`), in the synthetic development mode: every trial runs exactly once and the results equal
//! a local run; a task that crashes (exit 3) and one cancelled with `scancel` are recorded and retried; a
//! coordinator killed mid-array is adopted by the next one, which submits nothing new.
//!
//! `cargo test --test refine slurm:: -- --ignored` (after `scripts/slurm-start.sh DIR` and `export SLURM_CONF=DIR/slurm.conf`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn slurm_conf() -> String {
    std::env::var("SLURM_CONF").unwrap_or_else(|_| {
        panic!("SLURM_CONF is not set: start a cluster with scripts/slurm-start.sh DIR and export SLURM_CONF")
    })
}

fn experiment(dir: &Path) -> PathBuf {
    let exp = dir.join("exp.ron");
    std::fs::write(
        &exp,
        r#"ExperimentSpec(
    name: "slurm",
    backbone: (path: Some("unused-by-the-synthetic-executor")),
    tasks: [(id: "sst2")],
    seeds: [1],
    seed: 11,
    samples: 2,
    stages: [(name: "S1", dimension: Grouping, candidates: ["uniform", "spindle", "bottleneck"])],
)
"#,
    )
    .expect("write");
    exp
}

fn peftspace(work: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_peftspace"));
    c.env("PEFTSPACE_EXECUTOR", "synthetic")
        .env("SLURM_CONF", slurm_conf())
        .env("PEFTSPACE_SYNTHETIC_LOG", work.join("ran.log"))
        .env_remove("PEFTSPACE_SYNTHETIC_SLEEP_MS")
        .env_remove("PEFTSPACE_SYNTHETIC_CRASH_ONCE")
        .current_dir(work);
    c
}

fn slurm_run(work: &Path, out: &str) -> Command {
    let mut c = peftspace(work);
    c.args([
        "run",
        "exp.ron",
        "--out",
        out,
        "--executor",
        "slurm",
        "--poll-ms",
        "200",
    ])
    .stdout(Stdio::null());
    c
}

/// Primary score by trial id, from a results directory's trials.jsonl.
fn scores(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(dir.join("trials.jsonl"))
        .expect("trials.jsonl")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json line");
            (v["id"].to_string(), v["outcome"]["primary"].to_string())
        })
        .collect()
}

/// Trial ids the synthetic executor completed, with how often.
fn ran(work: &Path) -> BTreeMap<String, usize> {
    let mut count = BTreeMap::new();
    for line in std::fs::read_to_string(work.join("ran.log"))
        .unwrap_or_default()
        .lines()
    {
        *count.entry(line.to_string()).or_insert(0) += 1;
    }
    count
}

fn failures(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("slurm/failures.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("failure line"))
        .collect()
}

fn finish(child: &mut Child, limit: Duration) -> (bool, String) {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut stderr = String::new();
            use std::io::Read;
            let _ = child
                .stderr
                .take()
                .map(|mut s| s.read_to_string(&mut stderr));
            return (status.success(), stderr);
        }
        assert!(
            started.elapsed() < limit,
            "the coordinator did not finish within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The array job id once the coordinator recorded it.
fn active_job(out: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(text) = std::fs::read_to_string(out.join("slurm/active.json")) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                if let Some(id) = v["job_id"].as_str() {
                    return id.to_string();
                }
            }
        }
        assert!(Instant::now() < deadline, "no array was submitted");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The first running task of `job`, as `JOB_INDEX`.
fn running_task(job: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = Command::new("squeue")
            .env("SLURM_CONF", slurm_conf())
            .args(["-h", "-j", job, "-t", "running", "-o", "%i"])
            .output()
            .expect("squeue");
        if let Some(task) = String::from_utf8_lossy(&out.stdout).lines().next() {
            return task.trim().to_string();
        }
        assert!(Instant::now() < deadline, "no task of {job} started");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
#[ignore = "needs a Slurm cluster: scripts/slurm-start.sh, SLURM_CONF"]
fn every_trial_runs_once_results_equal_local_and_a_crashed_task_is_retried() {
    let work = tempfile::tempdir().expect("tmp");
    experiment(work.path());
    let local = peftspace(work.path())
        .args(["run", "exp.ron", "--out", "local"])
        .env("PEFTSPACE_SYNTHETIC_LOG", work.path().join("local.log"))
        .output()
        .expect("local run");
    assert!(
        local.status.success(),
        "{}",
        String::from_utf8_lossy(&local.stderr)
    );

    let mut child = slurm_run(work.path(), "slurm")
        .env(
            "PEFTSPACE_SYNTHETIC_CRASH_ONCE",
            work.path().join("crashed"),
        )
        .stderr(Stdio::piped())
        .spawn()
        .expect("slurm run");
    let (ok, stderr) = finish(&mut child, Duration::from_secs(240));
    assert!(ok, "{stderr}");
    let slurm = work.path().join("slurm");
    assert_eq!(
        scores(&work.path().join("local")),
        scores(&slurm),
        "Slurm and local results differ"
    );
    let ran = ran(work.path());
    assert_eq!(ran.len(), scores(&slurm).len());
    assert!(ran.values().all(|&n| n == 1), "a trial ran twice: {ran:?}");
    let failed = failures(&slurm);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["state"], "FAILED");
    assert_eq!(failed[0]["exit_code"], "3:0");
    assert!(stderr.contains("resubmitting"), "{stderr}");
}

#[test]
#[ignore = "needs a Slurm cluster: scripts/slurm-start.sh, SLURM_CONF"]
fn a_cancelled_task_is_recorded_and_retried() {
    let work = tempfile::tempdir().expect("tmp");
    experiment(work.path());
    let out = work.path().join("out");
    let mut child = slurm_run(work.path(), "out")
        .env("PEFTSPACE_SYNTHETIC_SLEEP_MS", "3000")
        .stderr(Stdio::piped())
        .spawn()
        .expect("slurm run");
    let job = active_job(&out);
    let task = running_task(&job);
    let cancelled = Command::new("scancel")
        .env("SLURM_CONF", slurm_conf())
        .arg(&task)
        .status()
        .expect("scancel");
    assert!(cancelled.success());
    let (ok, stderr) = finish(&mut child, Duration::from_secs(240));
    assert!(ok, "{stderr}");
    let failed = failures(&out);
    assert!(
        failed.iter().any(|f| f["state"] == "CANCELLED"),
        "the cancelled task was not recorded: {failed:?}"
    );
    let ran = ran(work.path());
    assert_eq!(ran.len(), scores(&out).len());
    assert!(ran.values().all(|&n| n == 1), "{ran:?}");
}

#[test]
#[ignore = "needs a Slurm cluster: scripts/slurm-start.sh, SLURM_CONF"]
fn a_killed_coordinator_is_replaced_by_one_that_adopts_the_array() {
    let work = tempfile::tempdir().expect("tmp");
    experiment(work.path());
    let out = work.path().join("out");
    let mut first = slurm_run(work.path(), "out")
        .env("PEFTSPACE_SYNTHETIC_SLEEP_MS", "2000")
        .stderr(Stdio::null())
        .spawn()
        .expect("slurm run");
    let job = active_job(&out);
    running_task(&job);
    first.kill().expect("kill -9");
    first.wait().expect("reap");

    let second = slurm_run(work.path(), "out").output().expect("rerun");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("adopting Slurm array {job}")),
        "{stderr}"
    );
    assert!(
        !out.join("slurm/submission-0002").exists(),
        "the rerun submitted again: {stderr}"
    );
    let ran = ran(work.path());
    assert_eq!(ran.len(), scores(&out).len());
    assert!(ran.values().all(|&n| n == 1), "{ran:?}");
}

/// Trials stored in a results directory.
fn stored(out: &Path) -> usize {
    std::fs::read_to_string(out.join("trials.jsonl")).map_or(0, |t| t.lines().count())
}

#[test]
#[ignore = "needs a Slurm cluster: scripts/slurm-start.sh, SLURM_CONF"]
fn a_search_moves_from_local_to_slurm_and_back_and_ctrl_c_leaves_the_array_to_adopt() {
    let work = tempfile::tempdir().expect("tmp");
    experiment(work.path());
    let out = work.path().join("out");
    // Local, killed after two trials.
    let mut local = peftspace(work.path())
        .args(["run", "exp.ron", "--out", "out"])
        .env("PEFTSPACE_SYNTHETIC_SLEEP_MS", "400")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("local run");
    let deadline = Instant::now() + Duration::from_secs(60);
    while stored(&out) < 2 {
        assert!(Instant::now() < deadline, "the local run stored nothing");
        std::thread::sleep(Duration::from_millis(20));
    }
    local.kill().expect("kill");
    local.wait().expect("reap");
    let before = stored(&out);

    // Slurm continues; Ctrl-C without a terminal leaves the array running (exit 130).
    let mut coordinator = slurm_run(work.path(), "out")
        .env("PEFTSPACE_SYNTHETIC_SLEEP_MS", "1500")
        .stderr(Stdio::piped())
        .spawn()
        .expect("slurm run");
    let job = active_job(&out);
    running_task(&job);
    // SAFETY: a signal to a child we started.
    unsafe { libc::kill(coordinator.id() as i32, libc::SIGINT) };
    let status = coordinator.wait().expect("wait");
    assert_eq!(status.code(), Some(130));

    // Local now would train beside the array: refused, naming it.
    let refused = peftspace(work.path())
        .args(["run", "exp.ron", "--out", "out"])
        .output()
        .expect("local again");
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains(&job));

    // Slurm adopts the array and finishes; back to local, nothing is left to run.
    let adopted = slurm_run(work.path(), "out").output().expect("slurm again");
    assert!(
        adopted.status.success(),
        "{}",
        String::from_utf8_lossy(&adopted.stderr)
    );
    assert!(String::from_utf8_lossy(&adopted.stderr).contains("adopting"));
    let total = stored(&out);
    assert!(total > before);
    let back = peftspace(work.path())
        .args(["run", "exp.ron", "--out", "out"])
        .output()
        .expect("local at the end");
    assert!(
        back.status.success(),
        "{}",
        String::from_utf8_lossy(&back.stderr)
    );
    assert!(String::from_utf8_lossy(&back.stdout).contains("0 trials run now"));
    assert_eq!(stored(&out), total);
    let ran = ran(work.path());
    assert_eq!(ran.len(), total);
    assert!(ran.values().all(|&n| n == 1), "{ran:?}");
}
