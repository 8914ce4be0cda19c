"""Shared pytest hooks: measured numbers printed at the end of the run (also under xdist)."""

from pathlib import Path


def _summary_file(config):
    return Path(config.rootpath) / ".pytest_cache" / "qsmprep-summary.txt"


def pytest_sessionstart(session):
    if not hasattr(session.config, "workerinput"):  # controller only
        f = _summary_file(session.config)
        if f.exists():
            f.unlink()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    f = _summary_file(config)
    if f.exists():
        terminalreporter.section("qsmprep measurements")
        for line in f.read_text().splitlines():
            terminalreporter.write_line(line)
