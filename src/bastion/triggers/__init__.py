"""Everything that starts a run: webhooks, cron schedules, operators, retry policies."""
