import io

from rich.console import Console

from madinfra.render.show import print_show, show_data
from madinfra.resources import Resource, UpdateRules
from madinfra.state.store import ResourceRecord, State


def rules_for(kind):
    return UpdateRules(server_owned=("metadata",))


def test_state_next_to_the_cluster():
    state = State(stack="demo", serial=3, outputs={"endpoint": "http://old"})
    state.resources["job/j"] = ResourceRecord("job", "j", {"spec": {"n": 1}}, provider_id="1")
    state.resources["vol/v"] = ResourceRecord("vol", "v", {"spec": {}}, provider_id="2")
    state.resources["cfg/c"] = ResourceRecord("cfg", "c", {"spec": {"v": 1}}, provider_id="3")
    state.resources["svc/t"] = ResourceRecord("svc", "t", {"spec": {}}, tainted=True)
    live = [
        Resource("job", "j", {"spec": {"n": 1}, "metadata": {"uid": "x"}}, provider_id="1", gpus=8, status={"state": "RUNNING"}),
        Resource("cfg", "c", {"spec": {"v": 2}}, provider_id="3"),
        Resource("svc", "t", {"spec": {}}),
        Resource("cfg", "stray", {"spec": {}}, provider_id="9"),
    ]
    data = show_data("demo", state, live, rules_for, {"endpoint": "http://new"})
    sync = {row["address"]: row["sync"] for row in data["resources"]}
    assert sync == {
        "cfg/c": "changed outside madinfra",
        "cfg/stray": "not in state",
        "job/j": "in sync",
        "svc/t": "last apply failed",
        "vol/v": "missing on the cluster",
    }
    assert data["gpus"] == 8 and data["outputs"] == {"endpoint": "http://new"} and data["state"]["serial"] == 3
    assert show_data("demo", state, live, rules_for, None)["outputs"] == {"endpoint": "http://old"}
    out = io.StringIO()
    print_show(data, Console(file=out, width=200))
    text = out.getvalue()
    assert "Stack 'demo' (state serial 3" in text and "RUNNING" in text and "endpoint = http://new" in text


def test_no_state_and_nothing_live():
    out = io.StringIO()
    print_show(show_data("demo", None, [], rules_for, None), Console(file=out, width=200))
    assert out.getvalue().splitlines()[:2] == ["Stack 'demo' (no state file)", "No resources in state or on the cluster."]
