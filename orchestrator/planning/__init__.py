"""What to train next: trials with content ids, static and adaptive planners, the pre-run estimate."""
