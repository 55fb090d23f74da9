from instag.cli import app

app()
