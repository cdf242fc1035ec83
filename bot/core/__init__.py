"""Pure decisions: events, intents, routing, commands, labels, the gate, statistics,
the lifecycle table. No I/O here: every function takes values and returns values."""
