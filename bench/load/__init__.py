"""The load stage: scenarios, locust users, load shapes, the locust engine and workers, prefill, send, calibrate."""
