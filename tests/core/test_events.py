"""events.jsonl: lines in and out, partial lines, a tail that never re-reads, the run summary."""

from __future__ import annotations

import json
import math
import os

import pytest

from peft_advisor.core import events as ev


# ---------------------------------------------------------------- lines


def test_make_event_and_to_line():
    e = ev.make_event("step", t=12.5, step=3, loss=1.25, grad_norm=None)
    assert e == {"v": 1, "kind": "step", "t": 12.5, "step": 3, "loss": 1.25}
    line = ev.to_line(e)
    assert line.endswith("\n") and line.count("\n") == 1
    assert list(json.loads(line))[:3] == ["v", "kind", "t"]
    assert ev.parse_line(line) == e


def test_make_event_stamps_time():
    assert ev.make_event("start")["t"] > 1.7e9


def test_strings_with_newlines_stay_on_one_line():
    e = ev.make_event("end", t=1, status="error", message="boom\nsecond line ✓")
    line = ev.to_line(e)
    assert line.count("\n") == 1 and ev.parse_line(line)["message"] == "boom\nsecond line ✓"


def test_nan_loss_survives():
    e = ev.parse_line(ev.to_line(ev.make_event("step", t=1, step=1, loss=float("nan"))))
    assert math.isnan(e["loss"])


@pytest.mark.parametrize("line", ["", "{", "not json", "[1, 2]", '"str"', "3", '{"v": 1}', '{"kind": 3}', b"\xff{}"])
def test_parse_line_rejects(line):
    assert ev.parse_line(line) is None


def test_parse_line_keeps_unknown_kinds_and_fields():
    assert ev.parse_line(b'{"v":2,"kind":"gpu","t":1,"x":[1]}') == {"v": 2, "kind": "gpu", "t": 1, "x": [1]}


# ---------------------------------------------------------------- LineBuffer


def test_line_buffer_keeps_partial_tail():
    buf = ev.LineBuffer()
    assert buf.feed('{"a"') == []
    assert buf.pending == b'{"a"'
    assert buf.feed(':1}\n{"b":2}\n{"c"') == ['{"a":1}', '{"b":2}']
    assert buf.feed(b":3}\r\n") == ['{"c":3}']
    assert buf.pending == b""


def test_line_buffer_multibyte_split():
    data = '{"m":"é✓"}\n'.encode()
    buf = ev.LineBuffer()
    out = []
    for i in range(len(data)):  # one byte at a time, cutting inside the UTF-8 sequences
        out += buf.feed(data[i : i + 1])
    assert out == ['{"m":"é✓"}']


def test_line_buffer_flush():
    buf = ev.LineBuffer()
    buf.feed('{"a":1}\n{"b":2}')
    assert buf.flush() == ['{"b":2}']
    assert buf.flush() == []


# ---------------------------------------------------------------- EventTail


def _append(path, text: str) -> None:
    with open(path, "ab") as fh:
        fh.write(text.encode("utf-8"))


def test_tail_missing_file_then_pieces(tmp_path):
    path = tmp_path / "events.jsonl"
    tail = ev.EventTail(path)
    assert tail.poll() == [] and tail.offset == 0

    start = ev.to_line(ev.make_event("start", t=1, method="lora", total_steps=4))
    step = ev.to_line(ev.make_event("step", t=2, step=1, loss=2.0))
    _append(path, start[:10])
    assert tail.poll() == []
    assert tail.offset == 10  # the partial line is buffered, not re-read later
    _append(path, start[10:] + step[:5])
    assert [e["kind"] for e in tail.poll()] == ["start"]
    _append(path, step[5:])
    assert [e["step"] for e in tail.poll()] == [1]
    assert tail.poll() == []
    size = path.stat().st_size
    assert tail.offset == size and tail.bytes_read == size  # every byte read exactly once
    assert tail.skipped == 0


def test_tail_skips_malformed_and_tolerates_unknown(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text(
        '{"v":1,"kind":"start","t":1}\n'
        "Traceback (most recent call last):\n"
        "\n"
        "[1,2]\n"
        '{"v":1,"kind":"gpu_sample","t":2,"used":1}\n'
        '{"v":1,"kind":"step","t":3,"step":1,"loss":1.0}\n',
        encoding="utf-8",
    )
    tail = ev.EventTail(path)
    assert [e["kind"] for e in tail.poll()] == ["start", "gpu_sample", "step"]
    assert tail.skipped == 2


def test_tail_after_truncation_reads_from_start(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text('{"v":1,"kind":"start","t":1}\n{"v":1,"kind":"step","t":2,"step":1}\n', encoding="utf-8")
    tail = ev.EventTail(path)
    assert len(tail.poll()) == 2
    path.write_text('{"v":1,"kind":"end","t":9,"status":"ok"}\n', encoding="utf-8")  # truncated and rewritten
    assert [e["kind"] for e in tail.poll()] == ["end"]


def test_tail_after_replacement_reads_from_start(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text('{"v":1,"kind":"start","t":1}\n', encoding="utf-8")
    tail = ev.EventTail(path)
    assert len(tail.poll()) == 1
    new = tmp_path / "new.jsonl"
    new.write_text('{"v":1,"kind":"start","t":5}\n{"v":1,"kind":"step","t":6,"step":1}\n', encoding="utf-8")
    os.replace(new, path)  # a new run in the same folder: a new, longer file
    assert [e["t"] for e in tail.poll()] == [5, 6]


def test_tail_bounded_reads_and_final_line(tmp_path):
    path = tmp_path / "events.jsonl"
    lines = [ev.to_line(ev.make_event("step", t=i, step=i)) for i in range(50)]
    path.write_text("".join(lines) + '{"v":1,"kind":"end","t":99,"status":"ok"}', encoding="utf-8")
    tail = ev.EventTail(path, max_bytes_per_poll=100)
    got = []
    for _ in range(200):
        got += tail.poll()
    assert [e["step"] for e in got] == list(range(50))
    assert tail.poll(final=True)[-1]["kind"] == "end"
    events, skipped = ev.read_events(path)
    assert len(events) == 51 and skipped == 0


# ---------------------------------------------------------------- summary

CANNED = [
    {"v": 1, "kind": "start", "t": 100.0, "method": "dora", "model": "demo", "trainable_params": 2597760,
     "total_params": 134515008, "total_steps": 10, "estimate_peak_bytes": 2_000_000_000,
     "estimate_adapter_bytes": 10_470_000, "device": "cpu", "pid": 4242, "run_dir": "runs/demo-dora"},
    *[
        {"v": 1, "kind": "step", "t": 100.0 + 2 * s + (8 if s > 1 else 0), "step": s, "loss": 3.0 - 0.2 * s,
         "lr": 1e-4 * s, "grad_norm": 1.0 / s, "tokens_per_s": 400.0 + s, "samples": 8 * s,
         "mem_allocated_bytes": 1000 + s, "mem_reserved_bytes": 2000 + s, "mem_peak_bytes": 3000 - s, "epoch": s / 10}
        for s in range(1, 7)
    ],
    {"v": 1, "kind": "eval", "t": 121.0, "step": 5, "eval_loss": 2.1, "eval_accuracy": 0.25},
    {"v": 1, "kind": "checkpoint", "t": 122.0, "step": 5, "path": "checkpoint-5", "adapter_bytes": 10_500_000},
    {"v": 1, "kind": "weird", "t": 123.0},
]


def test_summary_while_running():
    s = ev.summarize(CANNED)
    assert (s.status, s.method, s.model, s.device, s.pid) == ("running", "dora", "demo", "cpu", 4242)
    assert s.total_steps == 10 and s.step == 6 and s.progress == 0.6
    assert [step for step, _ in s.losses] == [1, 2, 3, 4, 5, 6]
    assert s.last_loss == pytest.approx(1.8)
    assert s.eval_losses == [(5, 2.1)] and s.eval_accuracies == [(5, 0.25)]
    assert (s.lr, s.grad_norm, s.tokens_per_s, s.samples) == (pytest.approx(6e-4), 1 / 6, 406.0, 48)
    assert (s.mem_allocated_bytes, s.mem_reserved_bytes, s.mem_peak_bytes) == (1006, 2006, 2999)
    assert s.estimate_peak_bytes == 2_000_000_000 and s.estimate_adapter_bytes == 10_470_000
    assert s.adapter_bytes == 10_500_000 and s.checkpoints == [(5, "checkpoint-5")]
    # (t6 - t1) / 5 steps = (120 - 102) / 5; 4 steps left
    assert s.seconds_per_step == pytest.approx(3.6)
    assert s.eta_s == pytest.approx(4 * 3.6)
    assert s.wall_s == 23.0 and s.events == len(CANNED) and not s.done


def test_eta_ignores_old_steps_beyond_the_window():
    steps = [{"kind": "start", "t": 0, "total_steps": 100}]
    steps += [{"kind": "step", "t": 50 + s, "step": s} for s in range(1, 40)]  # step 1 took 50 s
    s = ev.summarize(steps)
    assert s.seconds_per_step == pytest.approx(1.0)
    assert s.eta_s == pytest.approx(61.0)


def test_summary_end_ok_and_incremental():
    s = ev.summarize(CANNED[:3])
    ev.summarize(CANNED[3:], s)
    s.apply({"v": 1, "kind": "end", "t": 130.0, "status": "ok", "wall_s": 29.5, "mem_peak_bytes": 5000})
    assert s.done and s.status == "ok" and s.eta_s == 0.0
    assert s.final_loss == pytest.approx(1.8) and s.best_eval_loss == 2.1
    assert s.wall_s == 29.5 and s.mem_peak_bytes == 5000 and s.message is None
    json.dumps(s.to_dict())


def test_summary_oom_and_bad_status():
    s = ev.summarize([*CANNED, {"kind": "end", "t": 124, "status": "oom", "message": "CUDA out of memory"}])
    assert (s.status, s.message) == ("oom", "CUDA out of memory")
    s = ev.summarize([{"kind": "end", "t": 1, "status": "exploded"}])
    assert s.status == "error" and "exploded" in s.message


def test_summary_resume_drops_replayed_points():
    events = [
        {"kind": "start", "t": 0, "total_steps": 6},
        *[{"kind": "step", "t": s, "step": s, "loss": 10.0 - s} for s in range(1, 5)],
        {"kind": "end", "t": 5, "status": "cancelled"},
        {"kind": "start", "t": 10, "total_steps": 6},  # resumed from checkpoint-2
        *[{"kind": "step", "t": 10 + s, "step": s, "loss": 20.0 - s} for s in range(3, 7)],
    ]
    s = ev.summarize(events)
    assert s.status == "running" and s.message is None
    assert s.losses == [(1, 9.0), (2, 8.0), (3, 17.0), (4, 16.0), (5, 15.0), (6, 14.0)]
    assert s.start_t == 0 and s.eta_s == 0.0  # at step 6 of 6


def test_summary_survives_garbage_fields():
    s = ev.summarize([
        {"kind": "start", "total_steps": "ten", "method": 3},
        {"kind": "step", "step": "x", "loss": 1.0},
        {"kind": "step", "step": 2, "loss": "nan?", "lr": True, "mem_peak_bytes": "big"},
        {"kind": "eval", "eval_loss": None},
        {"kind": "checkpoint", "step": 2, "path": 7},
    ])
    assert s.total_steps is None and s.method is None and s.step == 2 and s.losses == []
    assert s.lr is None and s.mem_peak_bytes is None and s.checkpoints == [] and s.eta_s is None


def test_summary_of_nothing():
    s = ev.summarize([])
    assert s.status == "waiting" and s.progress is None and s.eta_s is None and s.wall_s is None


def test_an_evaluation_is_a_state_of_its_own_until_its_result_or_its_stop():
    from peft_advisor.core.events import make_event, summarize

    s = summarize([make_event("start", t=100.0, total_steps=10),
                   make_event("eval_start", t=101.0, step=0, rows=64, batches=16),
                   make_event("eval_progress", t=102.0, step=0, done=12, total=16)])
    assert s.evaluating and s.eval_label == "baseline" and (s.eval_done, s.eval_total, s.eval_rows) == (12, 16, 64)
    assert s.status == "running" and s.elapsed_s(130.0) == 30.0 and s.wall_s == 2.0  # the clock runs between events
    assert not summarize([make_event("eval", t=103.0, step=0, eval_loss=2.0)], s).evaluating
    stopped = summarize([make_event("eval_start", step=4, rows=8, batches=2),
                         make_event("eval_progress", step=4, done=1, total=2, status="stopped")])
    assert not stopped.evaluating and stopped.eval_losses == []
    assert summarize([make_event("eval_start", step=4, rows="many", batches=None)]).eval_label == "step 4"
