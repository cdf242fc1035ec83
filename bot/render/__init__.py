"""What people read: comments, the session report, charts, number formatting."""
