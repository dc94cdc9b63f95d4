"""The escalation tier: what leaves the process for the large model, and how it is made safe to send."""
