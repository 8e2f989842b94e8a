"""``vcorner report OUT``: one static HTML page of a batch, worst images first."""
