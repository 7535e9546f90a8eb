"""deploy/k8s/indexed-job.yaml is valid YAML with what an actpatch Indexed Job needs:
an Indexed batch/v1 Job whose pods run `actpatch run` with --shards equal to the
Job's completions, one --run-id for all pods, and --out on a ReadWriteMany volume
that every pod mounts.

Usage: check_k8s.py deploy/k8s/indexed-job.yaml
"""

import sys

import yaml


def main() -> None:
    docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
    jobs = [d for d in docs if d.get("kind") == "Job"]
    claims = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "PersistentVolumeClaim"}
    assert len(jobs) == 1, "one Job"
    job = jobs[0]
    assert job["apiVersion"] == "batch/v1"
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    completions = int(spec["completions"])
    assert 1 <= int(spec.get("parallelism", completions)) <= completions
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] in ("Never", "OnFailure")
    (container,) = pod["containers"]
    command = container["command"] + container.get("args", [])
    assert command[:2] == ["actpatch", "run"], command
    flags = dict(arg[2:].split("=", 1) for arg in command if arg.startswith("--") and "=" in arg)
    assert int(flags["shards"]) == completions, ("--shards must equal completions", flags)
    assert flags["run-id"], "every pod needs the same --run-id"
    if flags["run-id"].startswith("$("):
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        assert env.get(flags["run-id"][2:-1]), "the run id's variable has a value"
    out = flags["out"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = [m for m in container["volumeMounts"] if out.startswith(m["mountPath"])]
    assert mounts, f"--out {out} is on no mounted volume"
    claim = volumes[mounts[0]["name"]]["persistentVolumeClaim"]["claimName"]
    assert "ReadWriteMany" in claims[claim]["spec"]["accessModes"], "all pods write one folder"
    print(f"check_k8s: Indexed Job of {completions} shards, run id {flags['run-id']}, results on {claim} (ReadWriteMany)")


if __name__ == "__main__":
    main()
