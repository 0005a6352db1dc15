"""Exit codes shared by every command, so scripts and the nightly job can alert on them."""

OK = 0
FINDINGS = 1  # the command ran and found something that needs attention (e.g. critical SNAT)
USAGE = 2  # bad arguments or configuration
INPUT_ERROR = 3  # input missing or unreadable, store missing
REMOTE_ERROR = 4  # Azure said no: credentials, permissions, missing workspace or table
PARTIAL = 5  # the run finished but some records were quarantined
