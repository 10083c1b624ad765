"""The job runtime: command admission and dispatch, the job queue and runner, the job
store and journal, recovery after a restart."""
