"""docker-py (PyPI `docker`) drives a shoal daemon through its Docker Engine API socket.

Run by real/tests/docker_py.rs:  python3 docker_py_swarm.py SOCKET ADDR DATA_PORT IMAGE NAME

Every step is docker-py's own high-level API, so the requests are what docker-py sends: swarm init
with its own spec, a service created with docker-py's lowercase mode keys (`{"replicated": ...}`),
lists with docker-py's list-style filters (`{"name": ["x"]}`), scale and update (read-modify-write
with the version it read), logs (the multiplexed stream), remove, leave. Prints one line per step;
any failure raises (exit status 1), with what was seen.
"""

import sys
import time

import docker
from docker.types import ServiceMode


def wait_for(what, check, timeout=90):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}; last saw {last!r}")


def running_tasks(client, name):
    tasks = client.api.tasks(filters={"service": name, "desired-state": "running"})
    return [t for t in tasks if t["Status"]["State"] == "running"]


def main():
    socket, addr, data_port, image, name = sys.argv[1:6]
    client = docker.DockerClient(base_url=f"unix://{socket}", version="1.41", timeout=60)
    assert client.ping() is True

    # docker-py before 6.0 (Debian 12's python3-docker is 5.0.3) has no `data_path_port`.
    extra = {"data_path_port": int(data_port)} if int(docker.__version__.split(".")[0]) >= 6 else {}
    node_id = client.swarm.init(advertise_addr=addr, listen_addr=addr, **extra)
    print(f"node id: {node_id}", flush=True)
    assert client.swarm.attrs["JoinTokens"]["Worker"].startswith("SWMTKN-1-"), client.swarm.attrs
    assert client.info()["Swarm"]["ControlAvailable"] is True

    # Lowercase keys: docker-py's ServiceMode writes {"replicated": {"Replicas": 2}}.
    mode = ServiceMode("replicated", 2)
    assert "replicated" in mode, mode
    service = client.services.create(
        image,
        ["sh", "-c", "echo hello-from-py; echo warn-from-py >&2; sleep 3600"],
        name=name,
        mode=mode,
        labels={"Owner.Case": "kept"},
        stop_grace_period=1_000_000_000,
    )
    print(f"created {service.id}", flush=True)
    service.reload()
    assert service.attrs["Spec"]["Mode"]["Replicated"]["Replicas"] == 2, service.attrs["Spec"]
    assert service.attrs["Spec"]["Labels"] == {"Owner.Case": "kept"}, service.attrs["Spec"]

    # List-style filters, as docker-py sends them: {"name": ["…"]}.
    listed = client.services.list(filters={"name": name})
    assert [s.id for s in listed] == [service.id], listed
    assert client.services.list(filters={"name": name + "-nope"}) == []
    wait_for("2 running tasks", lambda: len(running_tasks(client, name)) == 2)
    print("2 tasks running", flush=True)

    # scale: docker-py re-reads the spec and sends it back with the version it read.
    # Docker answers `{}` (ServiceUpdateResponse with no warnings), which docker-py returns.
    assert service.scale(3) == {}
    wait_for("3 running tasks", lambda: len(running_tasks(client, name)) == 3)
    print("scaled to 3", flush=True)

    # update: an env var added; the scale and the rest of the spec are kept.
    service.reload()
    service.update(env=["GREETING=hi"])
    service.reload()
    spec = service.attrs["Spec"]
    assert spec["TaskTemplate"]["ContainerSpec"]["Env"] == ["GREETING=hi"], spec
    assert spec["Mode"]["Replicated"]["Replicas"] == 3, spec
    previous = service.attrs["PreviousSpec"]
    assert "Env" not in previous["TaskTemplate"]["ContainerSpec"], previous
    assert previous["Mode"]["Replicated"]["Replicas"] == 3, previous

    def updated():
        service.reload()
        state = (service.attrs.get("UpdateStatus") or {}).get("State")
        return state == "completed" and len(running_tasks(client, name)) == 3 and state

    wait_for("the update completed", updated, timeout=120)
    print("updated", flush=True)

    # logs: the multiplexed stream, demultiplexed by docker-py.
    def logs_seen():
        lines = b"".join(service.logs(stdout=True, stderr=True, timestamps=True)).decode().splitlines()
        hellos = [line for line in lines if line.endswith(" hello-from-py")]
        return len(hellos) >= 3 and lines

    lines = wait_for("every running task's line in the service logs", logs_seen)
    for line in lines:
        stamp, _, text = line.partition(" ")
        assert stamp.endswith("Z") and len(stamp) == 30, line
        assert text in ("hello-from-py", "warn-from-py"), line
    only_stdout = b"".join(service.logs(stdout=True, stderr=False)).decode().splitlines()
    assert only_stdout and all(line == "hello-from-py" for line in only_stdout), only_stdout
    print(f"logs: {len(lines)} lines", flush=True)

    assert service.remove() is True
    assert client.services.list(filters={"name": name}) == []
    wait_for("the tasks gone", lambda: running_tasks(client, name) == [])
    print("removed", flush=True)

    assert client.swarm.leave(force=True) is True
    assert client.info()["Swarm"]["LocalNodeState"] == "inactive"
    print("docker-py: all steps passed", flush=True)


if __name__ == "__main__":
    main()
