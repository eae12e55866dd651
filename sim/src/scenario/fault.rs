//! `fault:` steps: what the supervisor does to the cluster — crash and restart hosts, make nodes
//! leave, cut links (both ways or one way, for a while or until `heal`), slow or lossy links, and
//! container faults (removed behind the agent's back, health checks that start failing, slow
//! starts, crashes, images whose health checks fail), and disks that refuse
//! every write (`disk NODE fail-writes [for 10s]`, `disk NODE heal`), as a full disk does.
//!
//! Nodes are named as hosts (`manager-2`, `worker-3`) or by role: `leader` (the current raft leader)
//! `follower` (the first manager by name that is up and not the leader) and `crashed` (the host
//! crashed last, to restart it), resolved when the fault happens.

use std::time::Duration;

use super::parse::parse_duration;

/// A host named directly or by its role at the moment of the fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Leader,
    Follower,
    /// The host crashed most recently.
    Crashed,
    Host(String),
}

impl Target {
    pub(crate) fn parse(word: &str) -> Result<Target, String> {
        match word {
            "leader" => Ok(Target::Leader),
            "follower" => Ok(Target::Follower),
            "crashed" => Ok(Target::Crashed),
            "" | "rest" => Err(format!("expected a node name, leader, follower or crashed, got {word:?}")),
            name => Ok(Target::Host(name.to_string())),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Leader => f.write_str("leader"),
            Target::Follower => f.write_str("follower"),
            Target::Crashed => f.write_str("crashed"),
            Target::Host(name) => f.write_str(name),
        }
    }
}

/// The other side of a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Side {
    /// Every host not on the first side.
    Rest,
    Hosts(Vec<Target>),
}

/// What happens to containers of one image from now on, on every host.
#[derive(Debug, Clone, PartialEq)]
pub enum ImageFault {
    SlowStart(Duration),
    CrashAfter {
        after: Duration,
        exit_code: i64,
    },
    PullFails,
    /// The image EXPOSEs these ports (`(protocol, port)`): its containers serve on them.
    Exposes(Vec<(String, u16)>),
    /// Its containers also serve on these TCP ports, which the image does not EXPOSE.
    Listens(Vec<u16>),
    /// Its processes take this long to answer each request.
    AnswersAfter(Duration),
    /// Its processes die at once on SIGTERM.
    ExitsOnSigterm,
    /// Health checks of its containers fail from their start (`image X unhealthy`).
    Unhealthy,
}

impl ImageFault {
    /// Whether it is a fault (containers fail) rather than a trait of the image's processes.
    pub fn is_fault(&self) -> bool {
        matches!(
            self,
            ImageFault::SlowStart(_) | ImageFault::CrashAfter { .. } | ImageFault::PullFails | ImageFault::Unhealthy
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    Crash(Target),
    Restart(Target),
    Leave {
        target: Target,
        force: bool,
    },
    Partition {
        side: Vec<Target>,
        other: Side,
        one_way: bool,
        duration: Option<Duration>,
    },
    Heal,
    Link {
        a: Target,
        b: Target,
        delay_min: Duration,
        delay_max: Duration,
        loss: f64,
    },
    /// `docker rm -f` of the running container of `service`'s task in `slot`.
    ContainerRemove {
        service: String,
        slot: u64,
    },
    /// The health checks of the running container of `service`'s task in `slot` fail from now on.
    ContainerUnhealthy {
        service: String,
        slot: u64,
    },
    Image {
        image: String,
        fault: ImageFault,
    },
    /// Every write to the host's disk fails (ENOSPC) until `disk NODE heal`, or for `duration`.
    DiskFailWrites {
        target: Target,
        duration: Option<Duration>,
    },
    DiskHeal(Target),
    /// `second daemon on NODE`: a second `shoal daemon` on the node's data dir while its own runs.
    /// It must refuse at once and touch nothing; one that starts is a safety violation.
    SecondDaemon(Target),
}

const FAULT_WORDS: &str = "crash, restart, leave, partition, heal, link, container, image, disk, second daemon";

/// Split on whitespace, with `[`, `]` and `,` as words of their own.
fn tokens(text: &str) -> Vec<String> {
    text.replace('[', " [ ").replace(']', " ] ").replace(',', " , ").split_whitespace().map(str::to_string).collect()
}

/// `[a, b]` or a single bare name.
fn host_list(words: &[String], at: &mut usize) -> Result<Vec<Target>, String> {
    let first = words.get(*at).ok_or("expected a node list like [manager-1, worker-2]")?;
    *at += 1;
    if first != "[" {
        return Ok(vec![Target::parse(first)?]);
    }
    let mut hosts = Vec::new();
    loop {
        let word = words.get(*at).ok_or("unterminated node list: missing ]")?;
        *at += 1;
        match word.as_str() {
            "]" => break,
            "," => {}
            name => hosts.push(Target::parse(name)?),
        }
    }
    if hosts.is_empty() {
        return Err("empty node list".into());
    }
    Ok(hosts)
}

/// `50ms..200ms` or `50ms`.
fn delay_range(text: &str) -> Result<(Duration, Duration), String> {
    match text.split_once("..") {
        Some((low, high)) => {
            let (low, high) = (parse_duration(low)?, parse_duration(high)?);
            if high < low {
                return Err(format!("delay range {text:?} ends before it starts"));
            }
            Ok((low, high))
        }
        None => {
            let d = parse_duration(text)?;
            Ok((d, d))
        }
    }
}

impl std::str::FromStr for Fault {
    type Err = String;

    fn from_str(text: &str) -> Result<Fault, String> {
        let words = tokens(text);
        let word = |i: usize| words.get(i).map(String::as_str);
        let usage = |form: &str| format!("fault {text:?}: expected `{form}`");
        match word(0) {
            Some("crash") => match &words[1..] {
                [target] => Ok(Fault::Crash(Target::parse(target)?)),
                _ => Err(usage("crash leader|follower|NODE")),
            },
            Some("restart") => match &words[1..] {
                [target] => Ok(Fault::Restart(Target::parse(target)?)),
                _ => Err(usage("restart NODE")),
            },
            Some("leave") => {
                let mut force = false;
                let mut target = None;
                for w in &words[1..] {
                    match w.as_str() {
                        "-f" | "--force" => force = true,
                        name if target.is_none() => target = Some(Target::parse(name)?),
                        _ => return Err(usage("leave NODE [-f]")),
                    }
                }
                Ok(Fault::Leave { target: target.ok_or_else(|| usage("leave NODE [-f]"))?, force })
            }
            Some("heal") if words.len() == 1 => Ok(Fault::Heal),
            Some("heal") => Err(usage("heal")),
            Some("partition") => {
                let form = "partition [a, b] from rest|[c, d] [one-way] [for 20s]";
                let mut at = 1;
                let side = host_list(&words, &mut at).map_err(|e| format!("{}: {e}", usage(form)))?;
                if word(at) != Some("from") {
                    return Err(usage(form));
                }
                at += 1;
                let other = if word(at) == Some("rest") {
                    at += 1;
                    Side::Rest
                } else {
                    Side::Hosts(host_list(&words, &mut at).map_err(|e| format!("{}: {e}", usage(form)))?)
                };
                let (mut one_way, mut duration) = (false, None);
                while let Some(w) = word(at) {
                    at += 1;
                    match w {
                        "one-way" => one_way = true,
                        "for" => {
                            let d = word(at).ok_or_else(|| usage(form))?;
                            at += 1;
                            duration = Some(parse_duration(d)?);
                        }
                        _ => return Err(usage(form)),
                    }
                }
                Ok(Fault::Partition { side, other, one_way, duration })
            }
            Some("link") => {
                let form = "link A B [delay 50ms..200ms] [loss 0.1]";
                let (Some(a), Some(b)) = (word(1), word(2)) else { return Err(usage(form)) };
                let (a, b) = (Target::parse(a)?, Target::parse(b)?);
                let default = crate::net::LinkPolicy::default();
                let (mut delay_min, mut delay_max, mut loss) = (default.delay_min, default.delay_max, 0.0);
                let mut at = 3;
                while let Some(w) = word(at) {
                    let value = word(at + 1).ok_or_else(|| usage(form))?;
                    at += 2;
                    match w {
                        "delay" => (delay_min, delay_max) = delay_range(value)?,
                        "loss" => {
                            loss = value.parse().map_err(|_| format!("loss {value:?} is not a number"))?;
                            if !(0.0..=1.0).contains(&loss) {
                                return Err(format!("loss {loss} is not between 0 and 1"));
                            }
                        }
                        _ => return Err(usage(form)),
                    }
                }
                Ok(Fault::Link { a, b, delay_min, delay_max, loss })
            }
            Some("container") => {
                let form = "container remove|unhealthy SERVICE SLOT";
                let slot_of =
                    |slot: &String| slot.parse().map_err(|_| format!("{}: slot {slot:?} is not a number", usage(form)));
                match &words[1..] {
                    [verb, service, slot] if verb == "remove" || verb == "rm" => {
                        Ok(Fault::ContainerRemove { service: service.clone(), slot: slot_of(slot)? })
                    }
                    [verb, service, slot] if verb == "unhealthy" => {
                        Ok(Fault::ContainerUnhealthy { service: service.clone(), slot: slot_of(slot)? })
                    }
                    _ => Err(usage(form)),
                }
            }
            Some("image") => {
                let form = "image IMAGE slow-start 5s | crash-after 2s exit 1 | pull-fails | exposes 80,53/udp | listens 8081 | answers-after 100ms | exits-on-sigterm | unhealthy";
                let image = word(1).ok_or_else(|| usage(form))?.to_string();
                let fault = match &words[2..] {
                    [kind, d] if kind == "slow-start" => ImageFault::SlowStart(parse_duration(d)?),
                    [kind, d, exit, code] if kind == "crash-after" && exit == "exit" => ImageFault::CrashAfter {
                        after: parse_duration(d)?,
                        exit_code: code.parse().map_err(|_| format!("exit code {code:?} is not a number"))?,
                    },
                    [kind, d] if kind == "crash-after" => {
                        ImageFault::CrashAfter { after: parse_duration(d)?, exit_code: 1 }
                    }
                    [kind] if kind == "pull-fails" => ImageFault::PullFails,
                    [kind, d] if kind == "answers-after" => ImageFault::AnswersAfter(parse_duration(d)?),
                    [kind] if kind == "exits-on-sigterm" => ImageFault::ExitsOnSigterm,
                    [kind] if kind == "unhealthy" => ImageFault::Unhealthy,
                    [kind, ports @ ..] if kind == "exposes" && !ports.is_empty() => {
                        let mut exposed = Vec::new();
                        for word in ports.iter().filter(|w| *w != ",") {
                            let (port, proto) = word.split_once('/').unwrap_or((word, "tcp"));
                            let port: u16 = port.parse().ok().filter(|p| *p > 0).ok_or_else(|| {
                                format!("{}: port {port:?} is not a number from 1 to 65535", usage(form))
                            })?;
                            if proto != "tcp" && proto != "udp" {
                                return Err(format!("{}: protocol {proto:?} is neither tcp nor udp", usage(form)));
                            }
                            exposed.push((proto.to_string(), port));
                        }
                        ImageFault::Exposes(exposed)
                    }
                    [kind, ports @ ..] if kind == "listens" && !ports.is_empty() => {
                        let mut listens = Vec::new();
                        for word in ports.iter().flat_map(|w| w.split(',')).filter(|w| !w.is_empty()) {
                            let port = word.strip_suffix("/tcp").unwrap_or(word);
                            listens.push(port.parse().ok().filter(|p| *p > 0).ok_or_else(|| {
                                format!("{}: {word:?} is not a TCP port from 1 to 65535", usage(form))
                            })?);
                        }
                        ImageFault::Listens(listens)
                    }
                    _ => return Err(usage(form)),
                };
                Ok(Fault::Image { image, fault })
            }
            Some("disk") => {
                let form = "disk NODE fail-writes [for 10s] | disk NODE heal";
                match &words[1..] {
                    [target, verb] if verb == "fail-writes" => {
                        Ok(Fault::DiskFailWrites { target: Target::parse(target)?, duration: None })
                    }
                    [target, verb, for_, d] if verb == "fail-writes" && for_ == "for" => {
                        Ok(Fault::DiskFailWrites { target: Target::parse(target)?, duration: Some(parse_duration(d)?) })
                    }
                    [target, verb] if verb == "heal" => Ok(Fault::DiskHeal(Target::parse(target)?)),
                    _ => Err(usage(form)),
                }
            }
            Some("second") => match &words[1..] {
                [daemon, on, target] if daemon == "daemon" && on == "on" => {
                    Ok(Fault::SecondDaemon(Target::parse(target)?))
                }
                _ => Err(usage("second daemon on NODE")),
            },
            Some(other) => Err(format!("unknown fault {other:?}: expected {FAULT_WORDS}")),
            None => Err(format!("empty fault: expected {FAULT_WORDS}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str) -> Target {
        Target::Host(name.into())
    }

    #[test]
    fn parses_every_fault() {
        assert_eq!("crash leader".parse(), Ok(Fault::Crash(Target::Leader)));
        assert_eq!("restart manager-1".parse(), Ok(Fault::Restart(host("manager-1"))));
        assert_eq!("leave worker-1 -f".parse(), Ok(Fault::Leave { target: host("worker-1"), force: true }));
        assert_eq!(
            "partition [manager-2, worker-1] from rest for 20s".parse(),
            Ok(Fault::Partition {
                side: vec![host("manager-2"), host("worker-1")],
                other: Side::Rest,
                one_way: false,
                duration: Some(Duration::from_secs(20)),
            })
        );
        assert_eq!(
            "partition [leader] from [worker-1] one-way".parse(),
            Ok(Fault::Partition {
                side: vec![Target::Leader],
                other: Side::Hosts(vec![host("worker-1")]),
                one_way: true,
                duration: None
            })
        );
        assert_eq!(
            "link manager-1 worker-2 delay 50ms..200ms loss 0.1".parse(),
            Ok(Fault::Link {
                a: host("manager-1"),
                b: host("worker-2"),
                delay_min: Duration::from_millis(50),
                delay_max: Duration::from_millis(200),
                loss: 0.1
            })
        );
        assert_eq!("container remove web 2".parse(), Ok(Fault::ContainerRemove { service: "web".into(), slot: 2 }));
        assert_eq!(
            "image nginx:bad crash-after 2s exit 1".parse(),
            Ok(Fault::Image {
                image: "nginx:bad".into(),
                fault: ImageFault::CrashAfter { after: Duration::from_secs(2), exit_code: 1 }
            })
        );
        assert_eq!("heal".parse(), Ok(Fault::Heal));
        assert_eq!(
            "container unhealthy web 1".parse(),
            Ok(Fault::ContainerUnhealthy { service: "web".into(), slot: 1 })
        );
        assert_eq!(
            "image web:2 unhealthy".parse(),
            Ok(Fault::Image { image: "web:2".into(), fault: ImageFault::Unhealthy })
        );
        assert_eq!(
            "image echo:1 exposes 8080, 53/udp".parse(),
            Ok(Fault::Image {
                image: "echo:1".into(),
                fault: ImageFault::Exposes(vec![("tcp".into(), 8080), ("udp".into(), 53)])
            })
        );
        assert!("image echo:1 exposes http".parse::<Fault>().unwrap_err().contains("not a number"));
        assert_eq!(
            "image api:1 listens 8081, 9000/tcp".parse(),
            Ok(Fault::Image { image: "api:1".into(), fault: ImageFault::Listens(vec![8081, 9000]) })
        );
        assert!("image api:1 listens 53/udp".parse::<Fault>().unwrap_err().contains("not a TCP port"));
        assert_eq!(
            "disk leader fail-writes for 8s".parse(),
            Ok(Fault::DiskFailWrites { target: Target::Leader, duration: Some(Duration::from_secs(8)) })
        );
        assert_eq!(
            "disk manager-2 fail-writes".parse(),
            Ok(Fault::DiskFailWrites { target: host("manager-2"), duration: None })
        );
        assert_eq!("disk manager-2 heal".parse(), Ok(Fault::DiskHeal(host("manager-2"))));
        assert_eq!("second daemon on worker-1".parse(), Ok(Fault::SecondDaemon(host("worker-1"))));
        assert!("second daemon worker-1".parse::<Fault>().unwrap_err().contains("second daemon on NODE"));
        assert!("disk manager-2 explode".parse::<Fault>().unwrap_err().contains("disk NODE fail-writes"));
    }

    #[test]
    fn unknown_fault_names_the_choices() {
        let err = "crsh leader".parse::<Fault>().unwrap_err();
        assert_eq!(err, format!("unknown fault \"crsh\": expected {FAULT_WORDS}"));
    }
}
