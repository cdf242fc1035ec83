"""The online agents: the Claude advisor (anthropic SDK) and the Claude Code student."""
