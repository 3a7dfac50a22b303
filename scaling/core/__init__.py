"""Pure arithmetic of a run, free of torch: model shapes and the size ladder, parameter and
FLOP counts, token budgets, tau, learning-rate schedules and number labels."""
