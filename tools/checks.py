"""The pass/fail tally shared by the deployment checks (validate_deploy.py,
test-docker.py and the Kubernetes pod runners): each check prints one line
as it runs, and the summary line and exit status come from one place."""
import subprocess


class Report:
    def __init__(self, say=print, ok_detail: bool = True):
        self.say = say
        self.ok_detail = ok_detail
        self.passed = 0
        self.failed = 0

    def check(self, ok: bool, label: str, detail: str = "") -> bool:
        if ok:
            self.passed += 1
            self.say(f"ok      {label}{' (' + detail + ')' if detail and self.ok_detail else ''}")
        else:
            self.failed += 1
            self.say(f"FAILED  {label}{': ' + detail if detail else ''}")
        return ok

    def tool(self, label: str, argv: list) -> bool:
        """Runs `argv`; passes when it exits 0 (its output is the detail)."""
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        return self.check(proc.returncode == 0, label, (proc.stdout + proc.stderr).strip())

    def summary(self) -> int:
        """Prints the tally; the exit status (1 if anything failed)."""
        print(f"{self.passed} passed, {self.failed} failed")
        return 1 if self.failed else 0
