"""What a user reads: text and JSON summaries, plots, the HTML page."""
