"""OCI process specs: what the bundle's init runs, and the spec ``runc exec --process`` is given.

The wire describes a process as a ``ProcessInfo``; runc wants the OCI ``process`` object. Both
directions are here, so the daemon's view of a process and runc's agree.
"""

from __future__ import annotations

from typing import Any

from containerd_actors.protocol import AddProcess, ProcessInfo, User


def init_process_info(pid: int, config: dict[str, Any]) -> ProcessInfo:
    """The init process as the bundle's ``config.json`` describes it."""
    process = config.get("process") or {}
    user = process.get("user") or {}
    return ProcessInfo(
        pid=pid,
        args=[str(a) for a in process.get("args") or []],
        env=[str(e) for e in process.get("env") or []],
        cwd=str(process.get("cwd") or "/"),
        user=User(
            uid=int(user.get("uid", 0)),
            gid=int(user.get("gid", 0)),
            additional_gids=[int(g) for g in user.get("additionalGids") or []],
        ),
        terminal=bool(process.get("terminal", False)),
    )


def merge_env(base: list[str], overrides: list[str]) -> list[str]:
    """The container's environment with ``overrides`` applied by key (an override wins)."""
    merged: dict[str, str] = {}
    for entry in [*base, *overrides]:
        key, _, _ = entry.partition("=")
        merged[key] = entry
    return list(merged.values())


def exec_spec(init_spec: dict[str, Any], init: ProcessInfo, request: AddProcess) -> dict[str, Any]:
    """The container's own process spec (capabilities, rlimits, ...) with the request's changes.

    ``runc exec --process`` takes the file as the whole spec, so starting from the bundle's
    keeps exec'd processes as privileged as ``runc exec ID ARGS`` would make them.
    """
    # A shallow copy: only top-level keys are replaced, nested objects (capabilities, rlimits) are
    # shared with the template and only read (a deep copy was ~10% of the daemon's CPU per exec).
    spec = dict(init_spec)
    spec["args"] = list(request.args)
    spec["env"] = merge_env(list(init.env), list(request.env))
    spec["cwd"] = request.cwd or init.cwd or "/"
    if request.user is not None:
        spec["user"] = {
            "uid": request.user.uid,
            "gid": request.user.gid,
            "additionalGids": list(request.user.additional_gids),
        }
    spec["terminal"] = request.terminal
    spec.pop("consoleSize", None)
    if request.terminal and request.rows and request.cols:
        spec["consoleSize"] = {"height": request.rows, "width": request.cols}
    return spec


def exec_process_info(pid: int, spec: dict[str, Any], request: AddProcess, init: ProcessInfo) -> ProcessInfo:
    """What State shows for a process started from ``exec_spec``; without a user it runs as the init's."""
    return ProcessInfo(
        pid=pid,
        args=list(spec["args"]),
        env=list(spec["env"]),
        cwd=str(spec["cwd"]),
        user=request.user if request.user is not None else init.user,
        terminal=request.terminal,
    )
