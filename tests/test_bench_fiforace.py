"""The FIFO race bench's reader (bench/fiforace.py) counts as Heartbeat's reader drops."""

from __future__ import annotations

from pathlib import Path

from bench import fiforace


def test_a_message_begun_inside_another_loses_both_and_the_rest_is_counted(
    tmp_path: Path,
) -> None:
    a_body, b_body = fiforace.A_BODY, fiforace.B_BODY
    stream = tmp_path / "stream"
    stream.write_text(
        f">>>\n{a_body}<<<\n"  # whole
        f">>>\n>>>\n{b_body}<<<\n{a_body}<<<\n"  # A's piece, then B whole, then A's rest: both lost
        f">>>\n{b_body}<<<\n"  # whole
    )
    got = {"nv_failures": 0}
    fiforace.read_messages(stream, got)
    assert got == {"nv_failures": 1, "t=resource": 1, "t=ip-request-resp": 1}
