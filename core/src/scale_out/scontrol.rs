//! Reading Slurm's answers: `scontrol -o show job ARRAY_ID` prints one line per array task (pending tasks may share
//! one line with a range such as `ArrayTaskId=2-7%3`), each with `JobState=` and `ExitCode=status:signal`. `sacct`
//! is not used: it needs the accounting daemon, which small clusters often lack.

/// One array task as Slurm reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TaskState {
    pub index: usize,
    pub state: String,
    /// `status:signal`, e.g. `3:0` (exited 3) or `0:15` (killed by SIGTERM).
    pub exit_code: String,
}

/// States after which a task will not run again by itself.
pub(crate) fn is_finished(state: &str) -> bool {
    matches!(
        state,
        "COMPLETED"
            | "FAILED"
            | "CANCELLED"
            | "TIMEOUT"
            | "OUT_OF_MEMORY"
            | "NODE_FAIL"
            | "PREEMPTED"
            | "BOOT_FAIL"
            | "DEADLINE"
            | "REVOKED"
            | "SPECIAL_EXIT"
    )
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
}

/// The task indices of an array spec: `5`, `2-7`, `0,3-4`, with an optional `%throttle`.
fn expand(spec: &str) -> Vec<usize> {
    let spec = spec.split('%').next().unwrap_or("");
    let mut out = Vec::new();
    for part in spec.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) {
                    // A range is never larger than the arrays this program submits; cap it against garbage.
                    if b >= a && b - a < 1_000_000 {
                        out.extend(a..=b);
                    }
                }
            }
            None => {
                if let Ok(i) = part.parse() {
                    out.push(i);
                }
            }
        }
    }
    out
}

/// The tasks named in `scontrol -o show job` output (lines without an `ArrayTaskId` are ignored).
pub(crate) fn parse_show_job(text: &str) -> Vec<TaskState> {
    let mut tasks = Vec::new();
    for line in text.lines() {
        let (Some(spec), Some(state)) = (field(line, "ArrayTaskId"), field(line, "JobState"))
        else {
            continue;
        };
        let exit_code = field(line, "ExitCode").unwrap_or("0:0").to_string();
        for index in expand(spec) {
            tasks.push(TaskState {
                index,
                state: state.to_string(),
                exit_code: exit_code.clone(),
            });
        }
    }
    tasks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_ranges_and_states_are_read() {
        let text = "JobId=1 ArrayJobId=1 ArrayTaskId=2-3%2 ArrayTaskThrottle=2 JobName=wrap JobState=PENDING \
                    Reason=JobArrayTaskLimit ExitCode=0:0 RunTime=00:00:00\n\
                    JobId=3 ArrayJobId=1 ArrayTaskId=1 JobName=wrap JobState=FAILED Reason=NonZeroExitCode \
                    ExitCode=3:0\n\
                    JobId=9 JobName=plain JobState=RUNNING ExitCode=0:0\n\
                    JobId=2 ArrayJobId=1 ArrayTaskId=0,5 JobState=CANCELLED ExitCode=0:15\n";
        let tasks = parse_show_job(text);
        let summary: Vec<(usize, &str, &str)> = tasks
            .iter()
            .map(|t| (t.index, t.state.as_str(), t.exit_code.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                (2, "PENDING", "0:0"),
                (3, "PENDING", "0:0"),
                (1, "FAILED", "3:0"),
                (0, "CANCELLED", "0:15"),
                (5, "CANCELLED", "0:15")
            ]
        );
        assert!(is_finished("OUT_OF_MEMORY") && !is_finished("RUNNING") && !is_finished("PENDING"));
        assert!(parse_show_job("garbage\n\nArrayTaskId=x-y JobState=RUNNING").is_empty());
    }
}
