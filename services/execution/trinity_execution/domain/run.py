"""One decision in progress: the working copy of the state and what it has produced.

The operations here are the engine's vocabulary (start, complete, fail, skip a step;
restart a loop; fail, complete the execution). Each touches only the steps it names
and their direct dependents, found through the graph's indexes.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime
from decimal import Decimal
from typing import Any

from trinity_execution.domain import compensation, errors, fanout
from trinity_execution.domain.budget import check_budget
from trinity_execution.domain.commands import (
    CancelApproval,
    CancelChildExecution,
    CancelTimer,
    CancelWork,
    CloseMessageSubscription,
    Command,
    NotifyParent,
    OpenMessageSubscription,
    RequestWork,
    StartChildExecution,
    StartTimer,
    StepRef,
    TimerPurpose,
    child_execution_id,
    request_key,
    timer_id,
)
from trinity_execution.domain.compensation_state import CompensationReason
from trinity_execution.domain.context import build_context
from trinity_execution.domain.errors import Failure, FieldExpressionError
from trinity_execution.domain.facts import (
    SKIP_CONDITION_NOT_MET,
    SKIP_EXECUTION_FAILED,
    SKIP_UPSTREAM_FAILED,
    TERMINAL_SKIPS,
    BudgetExceeded,
    BudgetWarning,
    ExecutionRef,
    Fact,
    GatewayEvaluated,
    ProcessCompleted,
    ProcessFailed,
    ProcessPaused,
    StepCompleted,
    StepFailed,
    StepSkipped,
    StepStarted,
)
from trinity_execution.domain.gateways import choose_routes
from trinity_execution.domain.process import CompiledProcess
from trinity_execution.domain.readiness import Verdict, assess
from trinity_execution.domain.requests import (
    informed_requests,
    output_requests,
    request_approval,
    work_payload,
)
from trinity_execution.domain.retries import plan_retry
from trinity_execution.domain.state import (
    ExecutionState,
    ExecutionStatus,
    StepState,
    StepStatus,
)
from trinity_execution.domain.timers import InvalidTimer, fire_at
from trinity_process_model.expressions import ExpressionError
from trinity_process_model.model import (
    BudgetAction,
    FailureAction,
    GatewayConfig,
    HumanApprovalConfig,
    Money,
    Step,
    StepKind,
    SubProcessConfig,
    TimerConfig,
    WaitForMessageConfig,
)

BUDGET_PAUSER = "budget"


class Run:
    """The working state of one decision. Never touches the state it was given."""

    def __init__(self, process: CompiledProcess, state: ExecutionState, now: datetime) -> None:
        self.process = process
        self.graph = process.graph
        self.state = state.clone()
        self.now = now
        self.commands: list[Command] = []
        self.facts: list[Fact] = []
        self.ref = ExecutionRef(
            state.execution_id, process.definition_id, process.name, process.version
        )
        self._edited: set[str] = set()
        self._queue: deque[str] = deque()
        self.undo_children = False
        """Children this decision cancels compensate first (their parent compensates)."""

    # ----------------------------------------------------------------- basics

    def edit(self, step_id: str) -> StepState:
        """The step's state, copied into this decision's state on first write."""
        if step_id not in self._edited:
            current = self.state.steps.get(step_id)
            self.state.steps[step_id] = current.clone() if current else StepState()
            self._edited.add(step_id)
        return self.state.steps[step_id]

    @property
    def changed_steps(self) -> tuple[str, ...]:
        """The steps this decision wrote, in definition order."""
        return tuple(sorted(self._edited, key=self.graph.position))

    def context(self) -> dict[str, Any]:
        return build_context(self.process, self.state)

    def step_ref(self, step_id: str, st: StepState) -> StepRef:
        return StepRef(self.state.execution_id, step_id, st.iteration, st.attempt)

    def key(self, step_id: str, st: StepState) -> str:
        return request_key(self.state.execution_id, step_id, st.iteration, st.attempt)

    @property
    def is_live(self) -> bool:
        """Running or paused: steps may still finish."""
        return self.state.status in (ExecutionStatus.RUNNING, ExecutionStatus.PAUSED)

    # --------------------------------------------------------------- readiness

    def consider(self, step_ids: Any) -> None:
        """Queue steps whose readiness may have changed."""
        self._queue.extend(step_ids)

    def settle(self) -> None:
        """Assess queued steps until nothing more changes, then complete if all finished."""
        while self._queue and self.is_live:
            step_id = self._queue.popleft()
            if self.state.step(step_id).status is not StepStatus.PENDING:
                continue
            readiness = assess(self.graph, self.state, step_id)
            if readiness.verdict is Verdict.WAIT:
                continue
            if readiness.verdict is Verdict.SKIP:
                self.skip(step_id, readiness.reason)
                continue
            step = self.process.step(step_id)
            if step.condition:
                try:
                    holds, _ = self.process.condition(step.condition).evaluate(self.context())
                except ExpressionError as exc:
                    self.fail_attempt(step_id, errors.expression_failure(step_id, "condition", exc))
                    continue
                if not holds:
                    self.skip(step_id, SKIP_CONDITION_NOT_MET)
                    continue
            self.make_ready(step_id)
        if self._queue:
            # Stopped by a failure: remember what was left for a redrive.
            leftover = dict.fromkeys([*self.state.unsettled, *self._queue])
            self.state.unsettled = list(leftover)
            self._queue.clear()
        self.maybe_complete()

    def make_ready(self, step_id: str) -> None:
        if self.state.status is ExecutionStatus.RUNNING:
            self.start(step_id)
        elif self.state.status is ExecutionStatus.PAUSED:
            st = self.edit(step_id)
            st.move(StepStatus.READY)
            st.timer = ""
            self.state.active.pop(step_id, None)
            if step_id not in self.state.ready:
                self.state.ready.append(step_id)

    def start_ready(self) -> None:
        """Start the steps held while paused, in the order they became ready."""
        ready, self.state.ready = self.state.ready, []
        for step_id in ready:
            if self.state.status is not ExecutionStatus.RUNNING:
                self.state.ready.append(step_id)
            elif self.state.step(step_id).status is StepStatus.READY:
                self.start(step_id)

    def skip(self, step_id: str, reason: str) -> None:
        self._mark_skipped(step_id, reason)
        self.consider(self.graph.dependents(step_id))

    def _mark_skipped(self, step_id: str, reason: str) -> None:
        st = self.edit(step_id)
        st.move(StepStatus.SKIPPED)
        st.skip_reason = reason
        st.ended_at = self.now
        self.state.finished += 1
        self.facts.append(
            StepSkipped(
                execution=self.ref,
                step_id=step_id,
                iteration=st.iteration,
                reason=reason,
                occur_time=self.now,
            )
        )

    def skip_unreachable(self, reason: str) -> None:
        """The execution ended: every step that can no longer run ends skipped, one
        StepSkipped each. Steps below a step that failed for good are
        ``upstream_failed``; the others get `reason` (the execution failed or was
        cancelled). Runs once per ended execution, so it may visit every step."""
        below = self._below_failures()
        for step_id in self.graph.step_ids:
            if self.state.step(step_id).status in (StepStatus.PENDING, StepStatus.READY):
                self._mark_skipped(step_id, SKIP_UPSTREAM_FAILED if step_id in below else reason)
        self.state.ready.clear()

    def _below_failures(self) -> set[str]:
        """Steps downstream of a step that failed for good (cancelled ones aside)."""
        roots = [
            sid
            for sid, st in self.state.steps.items()
            if st.status is StepStatus.FAILED
            and not st.continued
            and (st.error is None or st.error.code != errors.CANCELLED)
        ]
        below: set[str] = set()
        queue = deque(roots)
        while queue:
            for dependent in self.graph.dependents(queue.popleft()):
                if dependent not in below:
                    below.add(dependent)
                    queue.append(dependent)
        return below

    def revive_skipped(self) -> list[str]:
        """A redrive: steps skipped only because the execution ended are pending again."""
        revived = [
            sid
            for sid, st in self.state.steps.items()
            if st.status is StepStatus.SKIPPED and st.skip_reason in TERMINAL_SKIPS
        ]
        for step_id in revived:
            st = self.edit(step_id)
            st.move(StepStatus.PENDING)
            st.skip_reason = ""
            st.ended_at = None
            self.state.finished -= 1
        return sorted(revived, key=self.graph.position)

    # ------------------------------------------------------------------ start

    def start(self, step_id: str) -> None:
        """Start the next attempt of a step (its dependencies are finished)."""
        step = self.process.step(step_id)
        st = self.edit(step_id)
        st.attempt += 1
        if st.started_at is None:
            st.started_at = self.now
        st.next_attempt_time = None
        st.error = None
        st.timer = ""
        self.facts.append(
            StepStarted(
                execution=self.ref,
                step_id=step_id,
                step_name=step.display_name,
                kind=step.kind,
                iteration=st.iteration,
                attempt=st.attempt,
                occur_time=self.now,
            )
        )
        config = step.config
        if isinstance(config, GatewayConfig):
            st.move(StepStatus.RUNNING)
            self.state.active[step_id] = None
            self._evaluate_gateway(step_id, config)
        elif isinstance(config, TimerConfig):
            self._start_timer(step_id, st, config)
        elif isinstance(config, HumanApprovalConfig):
            self._request_approval(step, st, config)
        elif isinstance(config, WaitForMessageConfig):
            self._await_message(step, st, config)
        elif isinstance(config, SubProcessConfig):
            self._start_child(step, st, config)
        else:
            self._request_work(step, st)

    def _request_work(self, step: Step, st: StepState) -> None:
        body = fanout.body_of(step)
        if body is not None:
            fanout.start(self, step, st, body)
            return
        st.for_each = None
        try:
            payload = work_payload(self.process, step, self.context(), self.state)
        except FieldExpressionError as exc:
            self._fail_to_start(step.id, st, exc.failure(step.id))
            return
        st.move(StepStatus.RUNNING)
        self.state.active[step.id] = None
        st.request = self.key(step.id, st)
        ref = self.step_ref(step.id, st)
        self.commands.append(
            RequestWork(key=st.request, payload=payload, correlation=ref, timeout=step.timeout)
        )
        self._start_step_timeout(step, st, ref)

    def _await_message(self, step: Step, st: StepState, config: WaitForMessageConfig) -> None:
        try:
            correlation_key = self.process.render(config.correlation_key, self.context())
        except ExpressionError as exc:
            self._fail_to_start(step.id, st, Failure(errors.EXPRESSION_ERROR, str(exc)))
            return
        st.move(StepStatus.WAITING)
        self.state.active[step.id] = None
        st.request = self.key(step.id, st)
        st.awaited_key = correlation_key
        ref = self.step_ref(step.id, st)
        self.commands.append(
            OpenMessageSubscription(
                key=st.request,
                correlation=ref,
                message_name=config.message,
                correlation_key=correlation_key,
            )
        )
        self._start_step_timeout(step, st, ref)

    def _start_child(self, step: Step, st: StepState, config: SubProcessConfig) -> None:
        if config.for_each:
            fanout.start(self, step, st, config)
            return
        try:
            context = self.context()
            child_input = {k: self.process.render(v, context) for k, v in config.input.items()}
        except ExpressionError as exc:
            self._fail_to_start(step.id, st, Failure(errors.EXPRESSION_ERROR, str(exc)))
            return
        st.move(StepStatus.WAITING)
        self.state.active[step.id] = None
        st.request = self.key(step.id, st)
        st.for_each = None
        command = self.child_command(step.id, st, config, st.request, child_input)
        st.child = command.child_execution_id
        self.commands.append(command)
        self._start_step_timeout(step, st, command.correlation)

    def child_command(
        self,
        step_id: str,
        st: StepState,
        config: SubProcessConfig,
        key: str,
        values: dict[str, str],
    ) -> StartChildExecution:
        """The start of one child (the step's, or one item's of a for_each)."""
        parent = self.state.parent
        return StartChildExecution(
            key=key,
            correlation=self.step_ref(step_id, st),
            child_execution_id=child_execution_id(key),
            process=config.process,
            version=config.version,
            input=values,
            triggered_by=self.state.triggered_by,
            trigger_kind=str(self.state.trigger_kind),
            depth=(parent.depth if parent is not None else 0) + 1,
        )

    @property
    def is_running(self) -> bool:
        return self.state.status is ExecutionStatus.RUNNING

    def tell_parent(self) -> None:
        """This execution ended: if a sub_process step started it, continue that step.
        A completed child answers with the output of its last completed step."""
        parent = self.state.parent
        if parent is None:
            return
        status = self.state.status
        output: str | None = None
        structured: dict[str, Any] | None = None
        if status is ExecutionStatus.COMPLETED:
            done = [
                (st.ended_at or self.now, self.graph.position(sid), st)
                for sid, st in self.state.steps.items()
                if st.status is StepStatus.COMPLETED
            ]
            if done:
                last = max(done, key=lambda item: (item[0], item[1]))[2]
                output, structured = last.output, last.structured
        error = self.state.error
        comp = self.state.compensation
        if status is ExecutionStatus.CANCELLED:
            code, message = errors.CANCELLED, self.state.cancel_reason or "cancelled"
        elif status is ExecutionStatus.COMPENSATION_FAILED and comp is not None:
            code = errors.COMPENSATION_FAILED
            message = f"the compensation of step {comp.failed_step_id!r} failed"
        else:
            code = error.code if error is not None else ""
            message = error.message if error is not None else ""
        self.commands.append(
            NotifyParent(
                key=f"{self.state.execution_id}/parent/{status}/{self.now.isoformat()}",
                parent_execution_id=parent.execution_id,
                request=parent.request,
                child_execution_id=self.state.execution_id,
                status=str(status),
                output=output,
                structured=structured,
                cost=self.state.total_cost,
                error_code=code,
                error_message=message,
            )
        )

    def start_step_timeout(self, step: Step, st: StepState, ref: StepRef) -> None:
        self._start_step_timeout(step, st, ref)

    def fail_to_start(self, step_id: str, st: StepState, failure: Failure) -> None:
        self._fail_to_start(step_id, st, failure)

    def add_cost(self, cost: Money) -> None:
        """Count the cost and apply ``on_exceeded`` when it crosses the budget."""
        self.apply_budget_action(self.count_cost(cost))

    def _start_step_timeout(self, step: Step, st: StepState, ref: StepRef) -> None:
        if step.timeout is not None:
            st.timeout_timer = timer_id(
                ref.execution_id, step.id, st.iteration, st.attempt, TimerPurpose.STEP_TIMEOUT
            )
            self.commands.append(
                StartTimer(
                    timer_id=st.timeout_timer,
                    fire_at=self.now + step.timeout,
                    purpose=TimerPurpose.STEP_TIMEOUT,
                    correlation=ref,
                )
            )

    def _request_approval(self, step: Step, st: StepState, config: HumanApprovalConfig) -> None:
        key = self.key(step.id, st)
        try:
            command = request_approval(
                self.process, step, config, self.context(), key, self.step_ref(step.id, st)
            )
        except FieldExpressionError as exc:
            self._fail_to_start(step.id, st, exc.failure(step.id))
            return
        st.move(StepStatus.WAITING)
        self.state.active[step.id] = None
        st.request = key
        self.commands.append(command)

    def _start_timer(self, step_id: str, st: StepState, config: TimerConfig) -> None:
        try:
            when = fire_at(config, self.now)
        except InvalidTimer as exc:
            self._fail_to_start(step_id, st, Failure(errors.INVALID_TIMER, str(exc)))
            return
        st.move(StepStatus.WAITING)
        self.state.active[step_id] = None
        ref = self.step_ref(step_id, st)
        st.timer = timer_id(
            ref.execution_id, step_id, st.iteration, st.attempt, TimerPurpose.STEP_TIMER
        )
        self.commands.append(
            StartTimer(
                timer_id=st.timer, fire_at=when, purpose=TimerPurpose.STEP_TIMER, correlation=ref
            )
        )

    def _fail_to_start(self, step_id: str, st: StepState, failure: Failure) -> None:
        st.move(StepStatus.RUNNING)
        self.state.active[step_id] = None
        self.fail_attempt(step_id, failure)

    def _evaluate_gateway(self, step_id: str, config: GatewayConfig) -> None:
        st = self.state.step(step_id)
        choice = choose_routes(
            self.process, step_id, config, self.context(), self.state.loop_counts
        )
        self.facts.append(
            GatewayEvaluated(
                execution=self.ref,
                step_id=step_id,
                iteration=st.iteration,
                gateway_type=config.type,
                selected_targets=choice.selected,
                routes=choice.evaluations,
                occur_time=self.now,
            )
        )
        if choice.failure is not None:
            self.fail_attempt(step_id, choice.failure)
            return
        self.complete(step_id, output=", ".join(choice.selected), routes=choice.selected)

    # --------------------------------------------------------------- complete

    def complete(
        self,
        step_id: str,
        *,
        output: str = "",
        structured: dict[str, Any] | None = None,
        cost: Money | None = None,
        decision: str = "",
        decided_by: str = "",
        comment: str = "",
        routes: tuple[str, ...] = (),
    ) -> None:
        step = self.process.step(step_id)
        st = self.edit(step_id)
        key = self.key(step_id, st)
        st.move(StepStatus.COMPLETED)
        self._release(step_id, st, cancel=False)
        st.ended_at = self.now
        st.output = output
        st.structured = structured
        st.cost = cost
        st.decision = decision
        st.decided_by = decided_by
        st.comment = comment
        st.routes = routes
        self.state.finished += 1
        if step.compensate is not None:  # replaced, never changed in place (see state)
            self.state.completions = [*self.state.completions, (step_id, st.iteration)]
        started = st.started_at or self.now
        self.facts.append(
            StepCompleted(
                execution=self.ref,
                step_id=step_id,
                iteration=st.iteration,
                attempt=st.attempt,
                output=output,
                structured_output=structured,
                cost=cost,
                duration=self.now - started,
                decision=decision,
                occur_time=self.now,
            )
        )
        self.commands.extend(
            informed_requests(self.process, step, key, st.iteration, output, decision)
        )
        if cost is not None:
            self.apply_budget_action(self.count_cost(cost))
        loops = [t for t in routes if self.graph.is_loop_route(step_id, t)]
        if loops and self.is_live:
            for target in loops:
                self.restart_loop(step_id, target)
            self.consider(loops)
        else:
            self.consider(self.graph.dependents(step_id))

    def _release(self, step_id: str, st: StepState, *, cancel: bool, reason: str = "") -> None:
        """Forget the step's outstanding request and timers (cancelling them if asked)."""
        if st.timeout_timer:
            self.commands.append(CancelTimer(st.timeout_timer))
            st.timeout_timer = ""
        if cancel:
            self.abandon_request(step_id, reason)
        elif st.for_each is not None:
            fanout.cancel_running(self, step_id, st, reason or "the step ended")
        elif st.request and self.process.step(step_id).kind is StepKind.WAIT_FOR_MESSAGE:
            self.commands.append(CloseMessageSubscription(st.request))
        if cancel and st.timer:
            self.commands.append(CancelTimer(st.timer))
        st.request = ""
        st.timer = ""
        st.awaited_key = ""
        self.state.active.pop(step_id, None)

    # -------------------------------------------------------------- cost/budget

    def currency_problem(self, cost: Money) -> str:
        """Why this cost cannot be added to the execution's total, or ''."""
        budget = self.process.spec.budget
        expected = (
            self.state.total_cost.currency
            if self.state.total_cost is not None
            else budget.limit.currency
            if budget is not None
            else cost.currency
        )
        if cost.currency != expected:
            return f"cost in {cost.currency}, but the execution counts in {expected}"
        return ""

    def count_cost(self, cost: Money) -> str:
        """Add the cost to the total, whatever the limits (money spent is always counted),
        and emit the budget facts it calls for. Returns why the budget is exceeded when
        this cost crossed it ('' otherwise): the caller applies ``on_exceeded``."""
        total = self.state.total_cost or Money(Decimal(0), cost.currency)
        total = total + cost
        self.state.total_cost = total
        budget = self.process.spec.budget
        check = check_budget(budget, total, self.state.budget_warned, self.state.budget_exceeded)
        if budget is None:
            return ""
        if check.warn:
            self.state.budget_warned = True
            self.facts.append(
                BudgetWarning(
                    execution=self.ref, total_cost=total, budget=budget.limit, occur_time=self.now
                )
            )
        if not check.exceed:
            return ""
        self.state.budget_exceeded = True
        self.facts.append(
            BudgetExceeded(
                execution=self.ref,
                total_cost=total,
                budget=budget.limit,
                action=budget.on_exceeded,
                occur_time=self.now,
            )
        )
        return f"cost {total} reached the budget of {budget.limit}"

    def apply_budget_action(self, exceeded: str) -> None:
        """The budget's ``on_exceeded``, when `exceeded` says it was just crossed."""
        budget = self.process.spec.budget
        if not exceeded or budget is None:
            return
        if budget.on_exceeded is BudgetAction.PAUSE:
            self.pause(BUDGET_PAUSER, exceeded)
        else:
            self.fail_execution(Failure(errors.BUDGET_EXCEEDED, exceeded), "")

    # ------------------------------------------------------------------- fail

    def fail_attempt(self, step_id: str, failure: Failure, *, retryable: bool = True) -> None:
        """The current attempt failed: retry after a backoff, continue, or fail the execution."""
        st = self.edit(step_id)
        step = self.process.step(step_id)
        self._release(step_id, st, cancel=False)
        attempt = max(st.attempt, 1)
        st.attempt = attempt
        plan = plan_retry(
            self.process.retry_policies[step_id], attempt - st.attempt_base, failure.code, self.now
        )
        will_retry = retryable and plan.will_retry and self.is_live
        st.error = failure
        if will_retry:
            assert plan.next_attempt_time is not None
            st.move(StepStatus.WAITING)
            st.next_attempt_time = plan.next_attempt_time
            ref = self.step_ref(step_id, st)
            st.timer = timer_id(
                ref.execution_id, step_id, st.iteration, attempt, TimerPurpose.RETRY_BACKOFF
            )
            self.state.active[step_id] = None
            self.commands.append(
                StartTimer(
                    timer_id=st.timer,
                    fire_at=plan.next_attempt_time,
                    purpose=TimerPurpose.RETRY_BACKOFF,
                    correlation=ref,
                )
            )
        else:
            st.move(StepStatus.FAILED)
            st.ended_at = self.now
        self.facts.append(
            StepFailed(
                execution=self.ref,
                step_id=step_id,
                iteration=st.iteration,
                attempt=attempt,
                error=failure,
                will_retry=will_retry,
                next_attempt_time=st.next_attempt_time if will_retry else None,
                occur_time=self.now,
            )
        )
        if will_retry:
            return
        if step.on_failure is FailureAction.CONTINUE:
            st.continued = True
            self.state.finished += 1
            self.consider(self.graph.dependents(step_id))
        else:
            self.fail_execution(failure, step_id)

    def abandon_request(self, step_id: str, reason: str = "") -> None:
        """Cancel the step's outstanding work or approval request (its attempt is over)."""
        st = self.edit(step_id)
        if st.request:
            kind = self.process.step(step_id).kind
            if st.for_each is not None:
                fanout.cancel_running(self, step_id, st, reason)
            elif kind is StepKind.HUMAN_APPROVAL:
                self.commands.append(CancelApproval(st.request, reason))
            elif kind is StepKind.WAIT_FOR_MESSAGE:
                self.commands.append(CloseMessageSubscription(st.request))
            elif kind is StepKind.SUB_PROCESS:
                self.commands.append(
                    CancelChildExecution(st.request, reason, compensate=self.undo_children)
                )
            else:
                self.commands.append(CancelWork(st.request, reason))
            st.request = ""
            st.awaited_key = ""

    def abandon(self, step_id: str, failure: Failure, reason: str) -> None:
        """Stop an outstanding step for good: cancel what it waits for, record it failed."""
        st = self.edit(step_id)
        self._release(step_id, st, cancel=True, reason=reason)
        if st.status is not StepStatus.FAILED:
            st.move(StepStatus.FAILED)
        st.error = failure
        st.ended_at = self.now
        st.next_attempt_time = None
        self.facts.append(
            StepFailed(
                execution=self.ref,
                step_id=step_id,
                iteration=st.iteration,
                attempt=max(st.attempt, 1),
                error=failure,
                will_retry=False,
                next_attempt_time=None,
                occur_time=self.now,
            )
        )

    def abandon_all(self, code: str, reason: str) -> None:
        for step_id in list(self.state.active):
            self.abandon(step_id, Failure(code, reason), reason)

    def fail_execution(self, failure: Failure, step_id: str) -> None:
        """Fail the execution: compensating first when completed steps declare it."""
        if not self.is_live:
            return
        self.undo_children = compensation.wanted(self)
        self.abandon_all(errors.CANCELLED, f"execution failed: {failure.code}")
        self.state.error = failure
        self.state.failed_step_id = step_id
        if compensation.begin(self, CompensationReason.FAILURE, SKIP_EXECUTION_FAILED):
            return
        self.state.move(ExecutionStatus.FAILED)
        self.state.ended_at = self.now
        self.skip_unreachable(SKIP_EXECUTION_FAILED)
        self.report_failed()

    def report_failed(self) -> None:
        """The execution has failed (compensated or not): say so, tell the parent."""
        self.facts.append(
            ProcessFailed(
                execution=self.ref,
                failed_step_id=self.state.failed_step_id,
                error=self.state.error or Failure(errors.CANCELLED, "failed"),
                total_cost=self.state.total_cost,
                occur_time=self.now,
            )
        )
        self.tell_parent()

    # ------------------------------------------------------------ pause/finish

    def pause(self, by: str, reason: str) -> None:
        if self.state.status is not ExecutionStatus.RUNNING:
            return
        self.state.move(ExecutionStatus.PAUSED)
        self.state.paused_by = by
        self.state.pause_reason = reason
        self.facts.append(
            ProcessPaused(execution=self.ref, paused_by=by, reason=reason, occur_time=self.now)
        )

    def maybe_complete(self) -> None:
        """Complete the execution when every step is finished."""
        if not self.is_live or self.state.finished < self.process.size or self.state.active:
            return
        self.state.move(ExecutionStatus.COMPLETED)
        self.state.ended_at = self.now
        self.state.ready.clear()
        self.commands.extend(output_requests(self.process, self.state.execution_id, self.context()))
        started = self.state.started_at or self.now
        self.facts.append(
            ProcessCompleted(
                execution=self.ref,
                total_cost=self.state.total_cost,
                total_duration=self.now - started,
                occur_time=self.now,
            )
        )
        self.tell_parent()

    # ------------------------------------------------------------------ loops

    def restart_loop(self, gateway_id: str, target: str) -> None:
        """Start a new iteration of the loop body: reset every step from the target down.

        Outstanding work in the body is cancelled; each step keeps a bounded history of
        its previous iterations. Counters of loops nested in the body start again.
        """
        key = (gateway_id, target)
        counts = self.state.loop_counts
        counts[key] = counts.get(key, 0) + 1
        for nested in self.graph.nested_loops(gateway_id, target):
            counts.pop(nested, None)
        for step_id in self.process.loop_body_order(gateway_id, target):
            st = self.edit(step_id)
            if step_id in self.state.active:
                self.abandon(step_id, Failure(errors.LOOP_RESTARTED, "a loop started over"), "")
            if st.is_finished:
                self.state.finished -= 1
            if st.status is StepStatus.READY and step_id in self.state.ready:
                self.state.ready.remove(step_id)
            st.reset_for_iteration()
