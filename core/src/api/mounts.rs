//! `--mount` as Docker's CLI reads it (docker/cli `opts/mount.go`): one CSV field list, `key=value`
//! pairs and a few bare flags, with its defaults (type `volume`, writable) and its error messages,
//! so a script's `--mount` line means the same here, in the simulator's scenarios and in Docker.

use super::{Mount, MountType, TmpfsOptions, VolumeOptions};

/// Split one CSV record as Go's `encoding/csv` does for a single line: commas separate fields, a
/// field in double quotes may hold commas, `""` in it is one quote.
fn csv_fields(text: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => return Err("extraneous or missing \" in quoted-field".into()),
                }
            }
            if !matches!(chars.peek(), None | Some(',')) {
                return Err("extraneous or missing \" in quoted-field".into());
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                if c == '"' {
                    return Err("bare \" in non-quoted-field".into());
                }
                field.push(c);
                chars.next();
            }
        }
        fields.push(field);
        match chars.next() {
            Some(',') => continue,
            _ => return Ok(fields),
        }
    }
}

fn parse_bool(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("invalid value for {key}: {value}")),
    }
}

/// One `--mount` value, or Docker's error for it (without the flag's `invalid argument` prefix).
pub fn parse_mount(text: &str) -> Result<Mount, String> {
    let mut mount = Mount { kind: MountType::Volume, ..Mount::default() };
    let mut volume: Option<VolumeOptions> = None;
    let mut tmpfs: Option<TmpfsOptions> = None;
    let mut bind_options = false;
    let mut kind_word = "volume".to_string();
    for field in csv_fields(text)? {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.to_ascii_lowercase(), Some(v.to_string())),
            None => (field.to_ascii_lowercase(), None),
        };
        let Some(value) = value else {
            match key.as_str() {
                "readonly" | "ro" => mount.read_only = true,
                "volume-nocopy" => volume.get_or_insert_with(VolumeOptions::default).no_copy = true,
                "bind-nonrecursive" => bind_options = true,
                _ => return Err(format!("invalid field '{field}' must be a key=value pair")),
            }
            continue;
        };
        match key.as_str() {
            "type" => kind_word = value.to_ascii_lowercase(),
            "source" | "src" => mount.source = value,
            "target" | "dst" | "destination" => mount.target = value,
            "readonly" | "ro" => mount.read_only = parse_bool(&key, &value)?,
            "consistency" => {}
            "bind-propagation" => {
                bind_options = true;
                mount.bind_propagation = value.to_ascii_lowercase();
            }
            "bind-nonrecursive" => bind_options = true,
            "volume-driver" => volume.get_or_insert_with(VolumeOptions::default).driver = value,
            "volume-opt" => {
                let (k, v) = value.split_once('=').unwrap_or((value.as_str(), ""));
                let options = volume.get_or_insert_with(VolumeOptions::default);
                if !k.is_empty() {
                    options.driver_options.insert(k.to_string(), v.to_string());
                }
            }
            "volume-label" => {
                let (k, v) = value.split_once('=').unwrap_or((value.as_str(), ""));
                let options = volume.get_or_insert_with(VolumeOptions::default);
                if !k.is_empty() {
                    options.labels.insert(k.to_string(), v.to_string());
                }
            }
            "volume-nocopy" => {
                volume.get_or_insert_with(VolumeOptions::default).no_copy =
                    parse_bool(&key, &value).map_err(|_| format!("invalid value for volume-nocopy: {value}"))?
            }
            "tmpfs-size" => {
                let bytes = crate::stack::units::memory_bytes(&value)
                    .map_err(|_| format!("invalid value for {key}: {value}"))?;
                tmpfs.get_or_insert_with(TmpfsOptions::default).size_bytes = bytes;
            }
            "tmpfs-mode" => {
                let mode = u32::from_str_radix(&value, 8).map_err(|_| format!("invalid value for {key}: {value}"))?;
                tmpfs.get_or_insert_with(TmpfsOptions::default).mode = Some(mode);
            }
            _ => return Err(format!("unexpected key '{key}' in '{field}'")),
        }
    }
    mount.kind = match kind_word.as_str() {
        "volume" => MountType::Volume,
        "bind" => MountType::Bind,
        "tmpfs" => MountType::Tmpfs,
        "" => return Err("type is required".into()),
        // The daemon's words for a type swarm has not (moby `convert/container.go`).
        other => return Err(format!("invalid MountType: {other:?}")),
    };
    if mount.target.is_empty() {
        return Err("target is required".into());
    }
    if volume.is_some() && mount.kind != MountType::Volume {
        return Err(format!("cannot mix 'volume-*' options with mount type '{}'", mount.kind.as_str()));
    }
    if bind_options && mount.kind != MountType::Bind {
        return Err(format!("cannot mix 'bind-*' options with mount type '{}'", mount.kind.as_str()));
    }
    if tmpfs.is_some() && mount.kind != MountType::Tmpfs {
        return Err(format!("cannot mix 'tmpfs-*' options with mount type '{}'", mount.kind.as_str()));
    }
    mount.volume = volume;
    mount.tmpfs = tmpfs;
    Ok(mount)
}

/// `service update --mount-add … --mount-rm TARGET`, as docker/cli's `updateMounts`: an added mount
/// replaces the one at its target, then the targets named are removed.
pub fn update_mounts(mounts: &mut Vec<Mount>, add: &[Mount], remove: &[String]) {
    for added in add {
        mounts.retain(|m| m.target != added.target);
        mounts.push(added.clone());
    }
    mounts.retain(|m| !remove.contains(&m.target));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_csv_syntax_and_defaults() {
        let m = parse_mount(
            "type=volume,source=data,target=/var/data,volume-driver=local,volume-opt=o=size=1g,volume-label=a=b,ro",
        )
        .unwrap();
        assert_eq!(
            (m.kind, m.source.as_str(), m.target.as_str(), m.read_only),
            (MountType::Volume, "data", "/var/data", true)
        );
        let v = m.volume.unwrap();
        assert_eq!(v.driver, "local");
        assert_eq!(v.driver_options.get("o").map(String::as_str), Some("size=1g"));
        assert_eq!(v.labels.get("a").map(String::as_str), Some("b"));
        let m = parse_mount("src=cache,dst=/cache").unwrap();
        assert_eq!((m.kind, m.read_only), (MountType::Volume, false), "volume and writable by default");
        let m = parse_mount("type=bind,source=/srv,target=/srv,readonly=false,bind-propagation=rslave").unwrap();
        assert_eq!((m.kind, m.read_only, m.bind_propagation.as_str()), (MountType::Bind, false, "rslave"));
        let m = parse_mount("type=tmpfs,target=/run/x,tmpfs-size=64m,tmpfs-mode=1770").unwrap();
        assert_eq!(m.tmpfs, Some(TmpfsOptions { size_bytes: 64 << 20, mode: Some(0o1770) }));
        let m = parse_mount("\"type=bind\",\"source=/a,b\",target=/x").unwrap();
        assert_eq!(m.source, "/a,b", "a quoted CSV field keeps its comma");
    }

    #[test]
    fn docker_errors() {
        let err = |text: &str| parse_mount(text).unwrap_err();
        assert_eq!(err("type=volume,source=x"), "target is required");
        assert_eq!(err("type=volume,foo=bar,target=/x"), "unexpected key 'foo' in 'foo=bar'");
        assert_eq!(err("type=volume,target=/x,nonsense"), "invalid field 'nonsense' must be a key=value pair");
        assert_eq!(err("target=/x,readonly=maybe"), "invalid value for readonly: maybe");
        assert_eq!(err("type=tmpfs,target=/x,tmpfs-mode=9"), "invalid value for tmpfs-mode: 9");
        assert_eq!(err("type=tmpfs,target=/x,tmpfs-size=lots"), "invalid value for tmpfs-size: lots");
        assert_eq!(
            err("type=bind,source=/a,target=/x,volume-driver=z"),
            "cannot mix 'volume-*' options with mount type 'bind'"
        );
        assert_eq!(err("type=volume,target=/x,tmpfs-size=1m"), "cannot mix 'tmpfs-*' options with mount type 'volume'");
        assert_eq!(
            err("type=tmpfs,target=/x,bind-propagation=shared"),
            "cannot mix 'bind-*' options with mount type 'tmpfs'"
        );
        assert_eq!(err("type=npipe,target=/x"), "invalid MountType: \"npipe\"");
    }

    #[test]
    fn daemon_checks_and_update() {
        let bind = parse_mount("type=bind,source=relative,target=/x").unwrap();
        assert_eq!(
            bind.config_error().unwrap(),
            "invalid mount config for type \"bind\": invalid mount path: 'relative' mount path must be absolute"
        );
        let tmpfs = parse_mount("type=tmpfs,source=/a,target=/x").unwrap();
        assert_eq!(
            tmpfs.config_error().unwrap(),
            "invalid mount config for type \"tmpfs\": field Source must not be specified"
        );
        assert_eq!(parse_mount("target=/x").unwrap().config_error(), None, "an anonymous volume is fine");
        let mut mounts = vec![parse_mount("src=a,dst=/a").unwrap(), parse_mount("src=b,dst=/b").unwrap()];
        update_mounts(&mut mounts, &[parse_mount("src=c,dst=/a").unwrap()], &["/b".to_string()]);
        assert_eq!(mounts.iter().map(|m| (m.source.as_str(), m.target.as_str())).collect::<Vec<_>>(), [("c", "/a")]);
    }
}
