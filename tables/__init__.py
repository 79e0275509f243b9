"""Per-user state: pure values and transitions (``profile``) and the Faust tables that hold them."""
