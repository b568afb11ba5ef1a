import pytest

from madinfra.resources import Change, Resource
from madinfra.sequential import ChangeSkipped, ReplaceIncomplete, apply_sequentially


def res(kind, name, deps=()):
    return Resource(kind, name, {"spec": {}}, depends_on=tuple(deps))


class Recorder:
    def __init__(self, fail=(), fail_delete=()):
        self.ops: list[tuple[str, str]] = []
        self.records: list[tuple[str, str | None, str | None]] = []
        self.progress: list[tuple[str, str]] = []
        self.fail = set(fail)
        self.fail_delete = set(fail_delete)

    def create(self, r):
        self.ops.append(("create", r.id))
        if r.id in self.fail:
            raise RuntimeError(f"cannot create {r.id}")
        return Resource(r.kind, r.name, r.spec, provider_id=f"new-{r.name}")

    def update(self, change):
        self.ops.append(("update", change.resource_id))
        if change.resource_id in self.fail:
            raise RuntimeError("update failed")
        return None

    def delete(self, r):
        self.ops.append(("delete", r.id))
        if r.id in self.fail or r.id in self.fail_delete:
            raise RuntimeError(f"cannot delete {r.id}")

    def record(self, change, live, error):
        self.records.append((change.resource_id, live.provider_id if live else None, type(error).__name__ if error else None))

    def run(self, changes, **kw):
        return apply_sequentially(changes, self.create, self.update, self.delete, lambda rid, msg: self.progress.append((rid, msg)), self.record, **kw)


def test_dependency_order_with_deletes_first_and_reversed():
    changes = [
        Change("create", "svc/s", res("svc", "s", ["job/j"]), None),
        Change("delete", "cfg/base", None, res("cfg", "base")),
        Change("create", "job/j", res("job", "j"), None),
        Change("delete", "cfg/top", None, res("cfg", "top", ["cfg/base"])),
    ]
    rec = Recorder()
    result = rec.run(changes)
    assert rec.ops == [("delete", "cfg/top"), ("delete", "cfg/base"), ("create", "job/j"), ("create", "svc/s")]
    assert [r[0] for r in rec.records] == ["cfg/top", "cfg/base", "job/j", "svc/s"]
    assert result.ok and result.done == ["cfg/top", "cfg/base", "job/j", "svc/s"]
    assert ("job/j", "creating") in rec.progress


def test_replace_is_delete_then_create_unless_the_provider_asks_otherwise():
    change = Change("replace", "job/j", res("job", "j"), res("job", "j"))
    rec = Recorder()
    rec.run([change])
    assert rec.ops == [("delete", "job/j"), ("create", "job/j")]
    assert rec.records == [("job/j", "new-j", None)]
    rec = Recorder()
    rec.run([change], create_before_delete=True)
    assert rec.ops == [("create", "job/j"), ("delete", "job/j")]
    rec = Recorder()
    rec.run([change], create_before_delete=lambda c: c.resource_id == "job/other")
    assert rec.ops == [("delete", "job/j"), ("create", "job/j")]


def test_create_before_delete_failure_still_records_the_new_resource():
    rec = Recorder(fail_delete={"job/j"})
    result = rec.run([Change("replace", "job/j", res("job", "j"), res("job", "j"))], create_before_delete=True)
    assert rec.records == [("job/j", "new-j", "ReplaceIncomplete")]
    assert isinstance(result.failed["job/j"], ReplaceIncomplete)


def test_failure_skips_dependents_and_runs_independent_changes():
    changes = [
        Change("create", "vol/v", res("vol", "v"), None),
        Change("create", "job/j", res("job", "j", ["vol/v"]), None),
        Change("create", "svc/s", res("svc", "s", ["job/j"]), None),
        Change("update", "cfg/c", res("cfg", "c"), res("cfg", "c")),
    ]
    rec = Recorder(fail={"job/j"})
    result = rec.run(changes)
    assert rec.ops == [("create", "vol/v"), ("create", "job/j"), ("update", "cfg/c")]
    assert rec.records == [
        ("vol/v", "new-v", None),
        ("job/j", None, "RuntimeError"),
        ("svc/s", None, "ChangeSkipped"),
        ("cfg/c", None, None),
    ]
    assert result.done == ["vol/v", "cfg/c"] and list(result.failed) == ["job/j"]
    assert result.skipped == {"svc/s": "skipped because job/j did not complete"}
    assert not result.ok


def test_failed_delete_of_a_dependent_keeps_what_it_depends_on():
    changes = [Change("delete", "vol/v", None, res("vol", "v")), Change("delete", "job/j", None, res("job", "j", ["vol/v"]))]
    rec = Recorder(fail={"job/j"})
    result = rec.run(changes)
    assert rec.ops == [("delete", "job/j")]
    assert "vol/v" in result.skipped


def test_interrupt_propagates_after_recording_finished_changes():
    rec = Recorder()

    def create(r):
        if r.name == "b":
            raise KeyboardInterrupt
        return rec.create(r)

    with pytest.raises(KeyboardInterrupt):
        apply_sequentially(
            [Change("create", "x/a", res("x", "a"), None), Change("create", "x/b", res("x", "b"), None)],
            create,
            rec.update,
            rec.delete,
            lambda *a: None,
            rec.record,
        )
    assert rec.records == [("x/a", "new-a", None)]


def test_skip_error_is_a_user_error_with_the_reason():
    err = ChangeSkipped("svc/s was skipped because job/j did not complete")
    assert "job/j" in str(err)
