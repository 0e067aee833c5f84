from specstream.cli import app

app(prog_name="specstream")
