"""Running a decision on ComfyUI: the deadline watch, degradation, attempts and job records."""
