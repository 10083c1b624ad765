"""The agent's own clock of jobs: schedules run as commands."""
