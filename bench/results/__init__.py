"""Run folders: run.json (who ran what, where) and the sample rows every report is computed from."""
