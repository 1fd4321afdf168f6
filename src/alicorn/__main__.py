from alicorn.cli.main import main

main()
