from zoo.export import main

main()
