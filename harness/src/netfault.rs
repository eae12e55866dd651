//! Network faults between daemons on loopback addresses, with the kernel's packet filter: a cut is
//! an iptables `DROP` rule on the INPUT chain for packets from one node's address to another's
//! (daemons bind their outgoing connections to their own address, so the source says who sent
//! it); a lossy link drops each packet with `-m statistic --mode random --probability p`. Every
//! rule carries the run's comment (`-m comment --comment shoal-run-<id>`), so a heal or the
//! cleanup removes exactly the run's rules. Needs root (CAP_NET_ADMIN).
//!
//! Link *delays* need `tc netem` (the `sch_netem` module), which this kernel does not have: those
//! faults are reported as skipped, never faked.

use std::process::{Command, Stdio};

/// Whether this process may change the packet filter.
pub fn have_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Whether `tc qdisc … netem` can work here (the module is loaded or loadable).
pub fn have_netem() -> bool {
    std::path::Path::new("/sys/module/sch_netem").exists()
        || Command::new("modprobe")
            .args(["-n", "sch_netem"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

fn iptables(args: &[String]) -> Result<(), String> {
    let output = Command::new("iptables")
        .arg("-w")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|err| format!("cannot run iptables: {err}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("iptables {} failed: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim()))
    }
}

/// Drop packets from `from` to `to` (IPv4 addresses); `probability` < 1 drops that share at random.
pub fn drop_rule(comment: &str, from: &str, to: &str, probability: Option<f64>) -> Result<(), String> {
    if !have_root() {
        return Err("network faults need root: they are iptables rules on the loopback addresses (run as root, or leave out the scenarios with partition/link faults)".into());
    }
    let mut args: Vec<String> = ["-I", "INPUT", "-s", from, "-d", to].iter().map(|s| s.to_string()).collect();
    if let Some(p) = probability {
        args.extend(["-m", "statistic", "--mode", "random", "--probability"].map(String::from));
        args.push(format!("{p:.4}"));
    }
    args.extend(["-m", "comment", "--comment", comment, "-j", "DROP"].map(String::from));
    iptables(&args)
}

/// Remove every INPUT rule carrying `comment` (and nothing else).
pub fn remove_rules(comment: &str) -> Result<(), String> {
    if !have_root() {
        return Ok(());
    }
    let output = Command::new("iptables")
        .args(["-w", "-S", "INPUT"])
        .stdin(Stdio::null())
        .output()
        .map_err(|err| format!("cannot run iptables: {err}"))?;
    let listing = String::from_utf8_lossy(&output.stdout);
    let wanted = format!("--comment {comment} ");
    for line in listing.lines().filter(|l| l.starts_with("-A INPUT ") && format!("{l} ").contains(&wanted)) {
        // `-A INPUT …` → `-D INPUT …`; the rule's words have no spaces inside (our comment has none).
        let mut args: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        args[0] = "-D".into();
        iptables(&args)?;
    }
    Ok(())
}
