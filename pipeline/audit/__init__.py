"""Audits of stored runs: a one-page report of a run (:mod:`.report`), a diff of two runs' alerts
(:mod:`.diff`), and their text, JSON and Markdown renderings (:mod:`.render`)."""
