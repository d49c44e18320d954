"""clip2 demo reuses finished stages with the same settings and redoes a stage (and the ones after it) otherwise."""
from clip2_core.cli.demo import Stages


def _stage(calls, name, out):
    def fn():
        calls.append(name)
        out.mkdir(parents=True, exist_ok=True)
        (out / "x").write_text(name)
        return name.upper()

    return fn


def test_stages_are_reused_redone_and_cascade(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    calls = []

    def run(settings, fresh=False):
        st = Stages(tmp_path, settings, fresh)
        ra = st.run("a", ["seed"], _stage(calls, "a", a), [a])
        rb = st.run("b", ["steps"], _stage(calls, "b", b), [b])
        return ra, rb

    assert run({"seed": 0, "steps": 10}) == ("A", "B") and calls == ["a", "b"]
    assert run({"seed": 0, "steps": 10}) == ("A", "B") and calls == ["a", "b"]  # both reused
    run({"seed": 0, "steps": 20})
    assert calls == ["a", "b", "b"]  # only b's setting changed
    run({"seed": 1, "steps": 20})
    assert calls == ["a", "b", "b", "a", "b"]  # a redone, so b too
    (b / "x").unlink()
    b.rmdir()
    run({"seed": 1, "steps": 20})
    assert calls[-1] == "b" and len(calls) == 6  # a missing output is remade
    run({"seed": 1, "steps": 20}, fresh=True)
    assert calls[-2:] == ["a", "b"]
