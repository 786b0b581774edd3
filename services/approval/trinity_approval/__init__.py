"""trinity_approval: the approval service (human-in-the-loop decisions with deadlines)."""
