//! The measurement harness that `bench_etcd` and `bench_k8s` share: one child process per
//! measurement, its resource usage, the results of a run, and their medians.
//!
//! The drivers include this file with `#[path]`. It lives in a directory without a `main.rs`
//! so that cargo does not build it as an example of its own.
//!
//! A child runs one measurement and prints one JSON object on its last stdout line, with the
//! peak RSS (`VmHWM`) and the CPU time (`/proc/self/stat`) of its own process added. A child
//! that must wait for the parent first prints `ready`.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Sets up logging to stderr (level `warn` unless `RUST_LOG` sets another) and returns the
/// runtime to run on: tokio's current-thread runtime for `threads` 1, its multi-thread runtime
/// with `threads` workers otherwise.
pub fn start(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    Ok(builder.enable_all().build()?)
}

/// Runs one measurement in a child and prints its result with the child's base and peak RSS,
/// its CPU time and its context switches added.
pub async fn run_child(
    measurement: impl Future<Output = anyhow::Result<Value>>,
) -> anyhow::Result<()> {
    let base_rss_kib = rss_kib("VmRSS")?;
    let cpu_before = cpu_seconds()?;
    let mut result = measurement.await?;
    let fields = result
        .as_object_mut()
        .context("a measurement returns an object")?;
    fields.insert("base_rss_kib".into(), json!(base_rss_kib));
    fields.insert("peak_rss_kib".into(), json!(rss_kib("VmHWM")?));
    fields.insert("cpu_secs".into(), json!(cpu_seconds()? - cpu_before));
    fields.insert("context_switches".into(), json!(context_switches()?));
    println!("{result}");
    Ok(())
}

/// Reads a `/proc/self/status` field in KiB: `VmRSS` now, or `VmHWM` for the peak.
fn rss_kib(field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|line| line.starts_with(field))
        .with_context(|| format!("no {field} in /proc/self/status"))?;
    let kib = line
        .split_whitespace()
        .nth(1)
        .with_context(|| format!("no value in {line:?}"))?;
    Ok(kib.parse()?)
}

/// Returns the context switches of every thread of this process, voluntary and not.
fn context_switches() -> anyhow::Result<u64> {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task")? {
        let status = std::fs::read_to_string(task?.path().join("status"))?;
        for line in status.lines() {
            if let Some(count) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                total += count.trim().parse::<u64>()?;
            }
        }
    }
    Ok(total)
}

/// Returns the CPU time this process used, user and system, in seconds.
fn cpu_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // The command name in field 2 may contain spaces, so count fields after its closing
    // parenthesis: utime and stime are fields 14 and 15 of the whole line.
    let after_name = &stat[stat
        .rfind(')')
        .context("no command name in /proc/self/stat")?
        + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let utime: f64 = fields[11].parse()?;
    let stime: f64 = fields[12].parse()?;
    // /proc reports CPU time in USER_HZ ticks, which is 100 per second on Linux.
    Ok((utime + stime) / 100.0)
}

/// A running child measurement.
pub struct Running {
    process: tokio::process::Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    /// Names the measurement in errors.
    description: String,
}

impl Running {
    /// Starts this program again as `child` with `args`, plus `envs` in its environment.
    /// `description` names the measurement in errors.
    pub fn start(
        args: &[String],
        envs: &[(&str, &str)],
        description: String,
    ) -> anyhow::Result<Running> {
        let mut command = tokio::process::Command::new(std::env::current_exe()?);
        command
            .arg("child")
            .args(args)
            .envs(envs.iter().copied())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        let mut process = command.spawn()?;
        let stdout = process.stdout.take().context("a piped stdout")?;
        Ok(Running {
            process,
            lines: BufReader::new(stdout).lines(),
            description,
        })
    }

    /// Waits for the child's `ready` line.
    pub async fn wait_ready(&mut self) -> anyhow::Result<()> {
        match self.lines.next_line().await? {
            Some(line) if line == "ready" => Ok(()),
            other => bail!("{}: expected `ready`, got {other:?}", self.description),
        }
    }

    /// Waits for the child to exit and returns the JSON object on its last line.
    pub async fn result(mut self) -> anyhow::Result<Value> {
        let mut last = None;
        while let Some(line) = self.lines.next_line().await? {
            last = Some(line);
        }
        let status = self.process.wait().await?;
        if !status.success() {
            bail!("{} failed with {status}", self.description);
        }
        let line = last.with_context(|| format!("{} printed no result", self.description))?;
        Ok(serde_json::from_str(&line)?)
    }
}

/// Results by case name, one entry per run.
pub type Results = BTreeMap<String, Vec<Value>>;

/// Prints one run's result of `case` to stderr and keeps it.
pub fn record(results: &mut Results, case: &str, value: Value) {
    eprintln!("  {case}: {value}");
    results.entry(case.to_owned()).or_default().push(value);
}

/// Describes the machine and the toolchain.
pub fn machine() -> Map<String, Value> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_kib: u64 = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0);

    let mut description = Map::new();
    description.insert(
        "cpus".into(),
        json!(std::thread::available_parallelism().map_or(0, |n| n.get())),
    );
    description.insert("cpu_model".into(), json!(cpu));
    description.insert(
        "memory_gib".into(),
        json!(memory_kib as f64 / (1024.0 * 1024.0)),
    );
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    description.insert("kernel".into(), json!(kernel.trim()));
    description.insert(
        "rustc".into(),
        json!(command_output("rustc", &["--version"])),
    );
    description
}

fn command_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .map(|text| text.trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Returns the median, or NaN for no values.
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[middle]
    } else {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    }
}

/// Returns `field` of every run of `case`.
pub fn field(results: &Results, case: &str, field: &str) -> Vec<f64> {
    results
        .get(case)
        .map(|runs| {
            runs.iter()
                .filter_map(|run| run.get(field).and_then(Value::as_f64))
                .collect()
        })
        .unwrap_or_default()
}

/// Returns the per-run ratios `numerator[i] / denominator[i]`.
pub fn ratios(numerator: &[f64], denominator: &[f64]) -> Vec<f64> {
    numerator
        .iter()
        .zip(denominator)
        .map(|(n, d)| n / d)
        .collect()
}

/// Converts KiB to MiB.
pub fn mib(kib: f64) -> f64 {
    kib / 1024.0
}
