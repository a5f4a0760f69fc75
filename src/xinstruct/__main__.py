from xinstruct.cli import app

app()
