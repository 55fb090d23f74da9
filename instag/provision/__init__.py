"""Making a machine ready and saying whether it is: `instag setup` (downloads, training, export)
and `instag doctor`. Sees every other part of instag."""
