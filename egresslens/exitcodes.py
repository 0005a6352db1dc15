"""Exit codes shared by every command, so scripts and the nightly job can alert on them."""

OK = 0
FINDINGS = 1  # the command ran and found something that needs attention (e.g. critical SNAT)
USAGE = 2  # bad arguments or configuration
INPUT_ERROR = 3  # input missing or unreadable, store missing
REMOTE_ERROR = 4  # Azure said no: credentials, permissions, missing workspace or table
PARTIAL = 5  # the run finished but some records were quarantined or some files skipped
BUSY = 6  # another EgressLens process holds the store (or the nightly job's lock)
CRITICAL = 7  # critical findings: SNAT over the critical level, threat-intel/IDPS hits, a compromised
#               source, a dependency newly denied that was allowed before (report, nightly)
INTERRUPTED = 130  # Ctrl-C (SIGINT): committed batches are kept, the next run resumes
