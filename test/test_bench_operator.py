"""`sop bench operator` end to end on real MetaWorld episodes: rules audited, and the operator acting, against the
expert and random actions."""

import json

import pytest
from conftest import sop_cli

pytestmark = pytest.mark.timeout(300)


def _by_rule(summaries):
    return {s["rule"]: s for s in summaries}


def test_operator_audit_never_fires_on_the_expert_and_catches_random_actions_early(tmp_path):
    common = ("--tasks", "button-press-topdown-v3", "--episodes-per-task", "2", "--workers", "1")
    expert_json, random_json = tmp_path / "expert.json", tmp_path / "random.json"
    for who, out in (("expert", expert_json), ("random", random_json)):
        result = sop_cli("bench", "operator", who, *common, "--json", str(out), timeout=280)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert "false alarms (solved)" in result.stdout and "takeover success" in result.stdout
    expert = json.loads(expert_json.read_text())
    assert expert["policy_success"] == {"button-press-topdown-v3": 1.0}
    rules = _by_rule(expert["overall"])
    named = {"configured", "stall only", "deviation only", "stuck 15"}
    assert len(rules) == 5 and list(rules)[0] == "configured" and named <= set(rules)
    (flipped,) = set(rules) - named
    assert expert["rules"]["stuck 15"]["stuck_steps"] == 15
    configs = expert["rules"]
    assert configs[flipped]["progress_excuses_deviation"] != configs["configured"]["progress_excuses_deviation"]
    # The expert is what the operator would do: no rule may take over from it.
    assert all(s["solved_alone"] == 2 and s["false_alarms"] == 0 and s["catches"] == 0 for s in rules.values())

    random = json.loads(random_json.read_text())
    assert random["policy_success"] == {"button-press-topdown-v3": 0.0}
    rules = _by_rule(random["overall"])
    # Random actions make no progress: every rule with the stall check fires in every episode, within
    # its stall_steps of the start (progress can rise by chance early, so allow a few steps more).
    stall_steps = random["rules"]["configured"]["stall_steps"]
    for name in ("configured", flipped, "stall only"):
        s = rules[name]
        assert s["failed_alone"] == 2 and s["catch_rate"] == 1.0 and s["mean_catch_step"] <= 3 * stall_steps, s
    assert rules["stall only"]["by_kind"]["deviation"] == 0 and rules["deviation only"]["by_kind"]["stall"] == 0

    # Takeover success: the operator acts. On the expert it never takes over; on random actions it takes over in
    # every episode, with and without recovery (the baseline in the same run), and counts what it did.
    for figures in (expert, random):
        operators = figures["takeover"]["operators"]
        names = [s["operator"] for s in figures["takeover"]["overall"]]
        assert names[0] == "no recovery (before)" and "configured" in names and set(operators) == set(names)
        assert (
            operators["no recovery (before)"]["recovery_steps"] == 0 and operators["configured"]["recovery_steps"] > 0
        )
    for s in expert["takeover"]["overall"]:
        assert s["takeover_episodes"] == 0 and s["takeover_success_rate"] is None and s["success_all"] == 2
    for s in random["takeover"]["overall"]:
        assert (
            s["episodes"] == s["takeover_episodes"] == 2
            and s["takeovers"] >= 2
            and s["operator_steps_per_takeover"] > 0
        )
        assert 0.0 <= s["ci_low"] <= s["ci_high"] <= 1.0 and s["step_limit_share"] == 1 - s["takeover_success_rate"]
    assert (
        expert["takeover"]["takeover_episodes"] == [] and len(random["takeover"]["takeover_episodes"]) == len(names) * 2
    )
    recoveries = {s["operator"]: s["recoveries_per_takeover"] for s in random["takeover"]["overall"]}
    assert recoveries["no recovery (before)"] == 0 and recoveries["recovery at every takeover (no probe)"] >= 1


@pytest.mark.parametrize(
    "args, message",
    [
        (("random", "--tasks", "no-such-task-v3"), "unknown task(s) ['no-such-task-v3']"),
        (("/nonexistent/v000001",), "/nonexistent/v000001: no such file or directory"),
        (("random", "--operators", "configured,nope"), "--operators: unknown ['nope']"),
    ],
)
def test_bad_arguments_are_one_line_errors_naming_what_is_wrong(args, message):
    result = sop_cli("bench", "operator", *args, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("sop bench: error:") and message in last
