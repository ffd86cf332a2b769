"""R12: a command delivered twice is applied once; nothing is ever duplicated or lost."""

from __future__ import annotations

from tests.helpers import Sale, eventually
from workflows import contract as c


async def test_a_repeated_request_id_is_applied_once_for_signals(sale: Sale) -> None:
    handle = await sale.start()
    opp = handle.id.removeprefix("opportunity-")
    await sale.wait_stage(opp, "Qualification")
    move = {"stage": "Proposal", "actor": "bob", "request_id": "req-1"}
    back = {"stage": "Qualification", "actor": "bob", "request_id": "req-2"}
    for payload in (move, move, back, back, move):  # a broker delivering twice, then a replay
        await sale.signal(opp, c.SIGNAL_CHANGE_STAGE, payload)
    await sale.update(opp, c.UPDATE_UPDATE_OPPORTUNITY, {"need": "barrier", "request_id": "x"})

    state = await sale.state(opp)
    assert (state.stage, state.visit, state.rejected) == ("Qualification", 3, [])
    assert [v["stage"] for v in await sale.visits(opp)] == ["Qualification", "Proposal", "Qualification"]
    assert len(await sale.tasks(opp)) == 2 + 3 + 2
    assert len(await sale.notifications(opp)) == 7


async def test_a_repeated_update_answers_again_without_applying_twice(sale: Sale) -> None:
    handle = await sale.start()
    opp = handle.id.removeprefix("opportunity-")
    await sale.wait_stage(opp, "Qualification")
    task = (await sale.state(opp)).open_tasks[0]
    payload = {"task_id": task.task_id, "actor": "alice", "request_id": "done-1"}

    first = await sale.update(opp, c.UPDATE_COMPLETE_TASK, payload)
    second = await sale.update(opp, c.UPDATE_COMPLETE_TASK, payload)

    assert first.tasks_done == second.tasks_done == 1
    rows = [t for t in await sale.tasks(opp) if t["id"] == task.task_id]
    assert len(rows) == 1 and rows[0]["status"] == "completed"

    # A client retrying the same update id gets the first answer; the task closes once.
    other = (await sale.state(opp)).open_tasks[0]
    answers = [
        await handle.execute_update(
            c.UPDATE_COMPLETE_TASK,
            {"task_id": other.task_id, "actor": "alice"},
            id="retry-me",
            result_type=c.StateView,
        )
        for _ in range(2)
    ]
    assert answers[0] == answers[1]
    assert sum(t["status"] == "completed" for t in await sale.tasks(opp)) == 2


async def test_completing_a_task_twice_without_request_id_is_refused_the_second_time(
    sale: Sale,
) -> None:
    handle = await sale.start()
    opp = handle.id.removeprefix("opportunity-")
    state = await sale.wait_stage(opp, "Qualification")
    payload = {"task_id": state.open_tasks[0].task_id, "actor": "alice"}
    await sale.signal(opp, c.SIGNAL_COMPLETE_TASK, payload)
    await sale.signal(opp, c.SIGNAL_COMPLETE_TASK, payload)
    state = await eventually(lambda: sale.state(opp), lambda s: len(s.rejected) == 1)
    assert "completed already" in state.rejected[0].reason
    assert state.tasks_done == 1
    assert sum(t["status"] == "completed" for t in await sale.tasks(opp)) == 1
