//! Network faults between daemons on loopback addresses, with the kernel's packet filter: a cut is
//! an iptables `DROP` rule on the INPUT chain for packets from one node's address to another's
//! (daemons bind their outgoing connections to their own address, so the source says who sent
//! it); a lossy link drops each packet with `-m statistic --mode random --probability p`. Every
//! rule carries the run's comment (`-m comment --comment shoal-run-<id>`), so a heal or the
//! cleanup removes exactly the run's rules. Needs root (CAP_NET_ADMIN).
//!
//! Link *delays* would need `tc netem` (the `sch_netem` module), which this kernel does not have:
//! they are done by userland relays ([`crate::relay`]), whose nat rules carry the same comment.

use std::process::{Command, Stdio};

/// Whether this process may change the packet filter.
pub fn have_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
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

/// Remove every rule carrying `comment` (and nothing else): the filter table's INPUT rules (cuts,
/// loss) and the nat table's OUTPUT rules (to the relays).
pub fn remove_rules(comment: &str) -> Result<(), String> {
    remove_in(comment, &[("filter", "INPUT"), ("nat", "OUTPUT")])
}

/// Remove the cuts and losses carrying `comment` (a heal), leaving the relays' nat rules.
pub fn remove_filter_rules(comment: &str) -> Result<(), String> {
    remove_in(comment, &[("filter", "INPUT")])
}

fn remove_in(comment: &str, chains: &[(&str, &str)]) -> Result<(), String> {
    if !have_root() {
        return Ok(());
    }
    for (table, chain) in chains {
        let output = Command::new("iptables")
            .args(["-w", "-t", table, "-S", chain])
            .stdin(Stdio::null())
            .output()
            .map_err(|err| format!("cannot run iptables: {err}"))?;
        let listing = String::from_utf8_lossy(&output.stdout);
        let wanted = format!("--comment {comment} ");
        let prefix = format!("-A {chain} ");
        for line in listing.lines().filter(|l| l.starts_with(&prefix) && format!("{l} ").contains(&wanted)) {
            // `-A CHAIN …` → `-t TABLE -D CHAIN …`; the rule's words have no spaces inside (our
            // comment has none).
            let mut args: Vec<String> = vec!["-t".into(), table.to_string()];
            args.extend(line.split_whitespace().map(str::to_string));
            args[2] = "-D".into();
            iptables(&args)?;
        }
    }
    Ok(())
}
