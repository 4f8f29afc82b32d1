"""README's job-field reference is generated from the schema, and the unknown-key error points at it."""

from __future__ import annotations

import json

from runner import fields
from runner.spec import Job
from tests.conftest import write_job


def test_readme_lists_every_schema_field_as_generated():
    readme = fields.README.read_text()
    assert readme == fields.readme_with_fields(readme), (
        f"README.md's job-field table differs from runner/spec.py: run `{fields.REGENERATE}` and commit README.md"
    )


def test_every_field_has_a_type_a_default_and_a_description():
    docs = {d.name: d for d in fields.fields()}
    assert set(Job.model_fields) <= set(docs)
    assert {"datasets[].frames", "memory.blocks_to_swap", "models.preset", "schedule.max_steps"} <= set(docs)
    for d in docs.values():
        assert d.type and d.default and d.description, d
    assert docs["name"].default == "required" and docs["seed"].default == "`42`"
    assert docs["trainer"].type == "`diffpipe` or `musubi`"
    assert docs["datasets[].resolutions"].default == "`[[832, 480]]`"
    assert docs["memory"].type == "`auto` or mapping"


def test_runner_fields_prints_the_reference(cli):
    code, stdout, _ = cli("fields", "--json")
    assert code == 0
    listed = json.loads(stdout)["fields"]
    assert [f["name"] for f in listed] == [d.name for d in fields.fields()]
    code, stdout, _ = cli("fields")
    assert code == 0 and "datasets[].caption_extension" in stdout and "host folder mounted read-only at /models" in stdout


def test_unknown_key_points_to_the_reference_and_the_near_name(cli, tmp_path):
    job = write_job(tmp_path, "name: x\ntrainer: musubi\ntask: t2v-1.3B\nmodels: {root: m}\ndatasets: [{path: d, frame: [33]}]\nschedule: {epoch: 3}\n")
    code, stdout, stderr = cli("validate", job)
    assert code == 2 and stdout == ""
    assert f"{job}:6: schedule.epoch: unknown key" in stderr and "rename it to `epochs`" in stderr
    assert f"{job}:5: datasets[0].frame: unknown key" in stderr and "rename it to `frames`" in stderr, "a dataset's near name is suggested too"
    assert "README.md#the-job-file" in stderr and "`runner fields`" in stderr
