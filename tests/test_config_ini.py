"""Config files the Asterisk way: #include, #tryinclude and [section](template) inheritance."""

from __future__ import annotations

from pathlib import Path

import pytest

from callback_ari.cli.app import main
from callback_ari.config.loader import load_config, parse_config
from callback_ari.errors import ConfigError

SECRETS = "[ari]\npassword = ari-secret-1\n[ami]\nsecret = ami-secret-2\n"


def write(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder / next(iter(files))


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    return [str(p) for p in info.value.problems]


# --- #include ------------------------------------------------------------------------------------


def test_include_reads_files_relative_to_the_main_file_in_the_current_section(
    tmp_path: Path,
) -> None:
    main_file = write(tmp_path, {
        "callback_ari.conf": "#include secrets.conf\n[queue:support]\n"
                             "#include <support-extra.conf>\nmax_attempts = 5\n"
                             '#include "queues.d/*.conf"\n',
        "secrets.conf": SECRETS,
        # no header: continues [queue:support]; the includer resumes it afterwards
        "support-extra.conf": "retry_interval = 45\n",
        "queues.d/b-sales.conf": "[queue:sales]\nmax_attempts = 2\n",
        "queues.d/a-billing.conf": "[queue:billing]\n",
    })  # fmt: skip
    config = load_config(main_file, env={})
    assert config.ari.password == "ari-secret-1"
    assert list(config.queues) == ["support", "billing", "sales"]  # wildcards in name order
    support = config.queues["support"]
    assert (support.retry_interval, support.max_attempts) == (45, 5)
    assert config.queues["sales"].max_attempts == 2


def test_include_works_from_another_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    main_file = write(tmp_path / "etc", {
        "callback_ari.conf": "#include secrets.conf\n[queue:support]\n", "secrets.conf": SECRETS,
    })  # fmt: skip
    monkeypatch.chdir(tmp_path)
    assert load_config(main_file, env={}).ami.secret == "ami-secret-2"


def test_problems_in_included_files_name_the_file_and_line(tmp_path: Path) -> None:
    main_file = write(tmp_path, {
        "callback_ari.conf": SECRETS + "[queue:support]\n#include support.conf\n"
                             "max_attempts = 4\n",
        "support.conf": "; support queue\nmax_attempts = 3\ncolour = blue\nnonsense\n",
    })  # fmt: skip
    inc = tmp_path / "support.conf"
    assert problems_of(main_file) == [
        f"[queue:support] {inc}:4: expected 'key = value', got 'nonsense'",
        f"[queue:support] colour: unknown key ({inc}:3)",
        f"[queue:support] max_attempts: set twice ({inc}:2 and {main_file}:7)",
    ]


def test_missing_include_is_a_problem_and_tryinclude_is_not(tmp_path: Path) -> None:
    main_file = write(tmp_path, {
        "callback_ari.conf": SECRETS + "#tryinclude local.conf\n#tryinclude conf.d/*.conf\n"
                             "[queue:support]\n#include absent.conf\n#include none.d/*.conf\n",
    })  # fmt: skip
    assert problems_of(main_file) == [
        f"[queue:support] {main_file}:8: #include absent.conf: no such file",
        f"[queue:support] {main_file}:9: #include none.d/*.conf: no file matches",
    ]
    (tmp_path / "local.conf").write_text("[queue:local]\n")
    main_file.write_text(main_file.read_text().replace("#include", ";#include"))
    assert list(load_config(main_file, env={}).queues) == ["local", "support"]


def test_include_loops_and_exec_are_refused(tmp_path: Path) -> None:
    main_file = write(tmp_path, {
        "callback_ari.conf": SECRETS + "[queue:support]\n#include a.conf\n#exec /bin/date\n",
        "a.conf": "#include b.conf\n",
        "b.conf": "#include a.conf\n",
    })  # fmt: skip
    assert problems_of(main_file) == [
        f"[queue:support] {tmp_path / 'b.conf'}:1: #include a.conf: includes itself "
        "(callback_ari.conf -> a.conf -> b.conf -> a.conf)",
        f"[queue:support] {main_file}:7: #exec is not supported (use #include)",
    ]


# --- templates ------------------------------------------------------------------------------------

TEMPLATES = (
    SECRETS
    + """
[base](!)
region = GB
max_attempts = 5
prompt_offer = sound:custom/offer

[evenings](!)
hours = mon-fri 17:00-22:00
max_attempts = 2

[queue:sales](base)
retry_interval = 60

[queue:support](base,evenings)
prompt_offer = sound:custom/support-offer

[eu](!,base)
timezone = Europe/Berlin

[queue:eu-sales](eu)
max_attempts = 9
"""
)


def test_sections_inherit_from_templates_with_their_own_lines_winning() -> None:
    config = parse_config(TEMPLATES, env={})
    assert list(config.queues) == ["sales", "support", "eu-sales"]  # templates are not queues
    sales, support, eu = (config.queues[n] for n in ("sales", "support", "eu-sales"))
    assert (sales.region, sales.max_attempts, sales.retry_interval) == ("GB", 5, 60)
    assert sales.prompts["offer"] == ("sound:custom/offer",)
    # a later template replaces an earlier one's value; the section's own line replaces both
    assert (support.max_attempts, support.hours) == (2, "mon-fri 17:00-22:00")
    assert support.prompts["offer"] == ("sound:custom/support-offer",)  # replaced, not appended
    # a template built on a template
    assert (eu.region, eu.timezone, eu.max_attempts) == ("GB", "Europe/Berlin", 9)


def test_plus_adds_to_an_earlier_section() -> None:
    text = TEMPLATES + "\n[queue:sales](+)\ncaller_id = Sales <2025550100>\n"
    sales = parse_config(text, env={}).queues["sales"]
    assert (sales.caller_id, sales.retry_interval) == ("Sales <2025550100>", 60)


def test_template_mistakes_name_the_line() -> None:
    text = SECRETS + (
        "[base](!)\ncolour = blue\nmax_attempts = 0\n"
        "[queue:sales](base)\n"
        "[queue:support](bsae)\n"
        "[queue:other](base) trailing\n"
    )
    with pytest.raises(ConfigError) as info:
        parse_config(text, env={})
    assert [str(p) for p in info.value.problems] == [
        "[queue:support] line 9: inherits from unknown template 'bsae' (templates: base)",
        "[queue:support] line 10: bad section header, got '[queue:other](base) trailing'",
        "[queue:sales] colour: unknown key (line 6, from template [base])",
        "[queue:sales] max_attempts: must be >= 1, got '0'",
    ]


def test_config_check_reads_includes_and_templates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main_file = write(tmp_path, {
        "callback_ari.conf": "#include secrets.conf\n[tpl](!)\nmax_attempts = 7\n"
                             "[queue:support](tpl)\n",
        "secrets.conf": SECRETS,
    })  # fmt: skip
    assert main(["config", "check", "-c", str(main_file)]) == 0
    out = capsys.readouterr().out
    assert "[queue:support]" in out and "max_attempts = 7" in out and "[tpl]" not in out
    assert "ari-secret-1" not in out
