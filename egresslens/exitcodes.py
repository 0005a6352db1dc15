"""Exit codes shared by every command, so scripts and the nightly job can alert on them.

Only 1 and 7 mean "the command ran and found something"; every failure has a code of its own and
prints one sentence (``error: ...``) on stderr, never a traceback (README, "Exit codes").
"""

OK = 0
FINDINGS = 1  # the command ran and found something that needs attention (e.g. critical SNAT)
USAGE = 2  # bad arguments or configuration (a flag, a window such as --since 99999999999d, a setting)
INPUT_ERROR = 3  # input missing or unreadable (a file, a policy, the store)
REMOTE_ERROR = 4  # Azure said no: credentials, permissions, missing workspace or table
PARTIAL = 5  # the run finished but some records were quarantined or some files skipped
BUSY = 6  # another EgressLens process holds the store (or the nightly job's lock)
CRITICAL = 7  # critical findings: SNAT over the critical level, threat-intel/IDPS hits, a compromised
#               source, a dependency newly denied that was allowed before (report, nightly)
IO_ERROR = 8  # could not write: the disk is full, or the store, its temporary directory or an output
#               file is on a read-only or inaccessible path (nothing half-written is left behind)
OUT_OF_MEMORY = 9  # the memory budget (EGRESSLENS_MEMORY_LIMIT) was not enough
INTERNAL = 70  # an unexpected error: a bug to report (EGRESSLENS_DEBUG=1 shows the traceback)
INTERRUPTED = 130  # Ctrl-C (SIGINT): committed batches are kept, the next run resumes

# Codes after which a report was written and says what it found (CI maps these to "succeeded").
ANSWERS = (OK, FINDINGS, CRITICAL)
