"""The closing lines of ./scripts/test.sh: one per runtime and a total, read from pytest's JUnit reports.

Usage: test_summary.py VERSION=REPORT.xml ...  Exits 1 when a report is missing (that run broke off) or
counts a failure or error.
"""
import sys
import xml.etree.ElementTree as ET

COUNTS = ("tests", "failures", "errors", "skipped")


def counts(report):
    suites = ET.parse(report).getroot()
    suites = [suites] if suites.tag == "testsuite" else list(suites)
    total = {name: sum(int(suite.get(name, 0)) for suite in suites) for name in COUNTS}
    seconds = sum(float(suite.get("time", 0)) for suite in suites)
    return total, seconds


def line(passed, failed, skipped):
    return f"{passed} passed, {failed} failed, {skipped} skipped"


def main(args):
    ok, totals = True, dict.fromkeys(("passed", "failed", "skipped"), 0)
    for arg in args:
        version, _, report = arg.partition("=")
        try:
            c, seconds = counts(report)
        except (OSError, ET.ParseError) as e:
            print(f"ComfyUI {version}: no test report ({e}); the run broke off")
            ok = False
            continue
        failed = c["failures"] + c["errors"]
        passed = c["tests"] - failed - c["skipped"]
        ok = ok and failed == 0
        for name, value in (("passed", passed), ("failed", failed), ("skipped", c["skipped"])):
            totals[name] += value
        print(f"ComfyUI {version} ({seconds / 60:.1f} min): {line(passed, failed, c['skipped'])}")
    print(f"total: {line(totals['passed'], totals['failed'], totals['skipped'])}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
