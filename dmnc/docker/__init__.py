"""Docker Engine API client for dmnc: httpx over the daemon's Unix socket under trio, no Docker SDK.

Start here:

    endpoint = await discover_endpoint(docker_host=args.docker_host)     # dmnc.docker.discovery
    async with DockerClient.connect(endpoint.address) as docker:         # dmnc.docker.client
        runtime = detect_runtime(docker.server_version, await docker.info(), endpoint.address)
        networks = await docker.list_networks()
        async with docker.events(filters={"type": ["network"]}) as events:
            async for event in events: ...

Modules: `client` (DockerClient, ContainerSpec, the stream types), `errors` (the typed errors, all derived from
DockerError), `models` (validated response models), `events` (event decoding, filters, `since`), `streams` (frame
demultiplexer, JSON-lines and progress decoders), `attach` (websocket attach), `discovery` (which socket, which
product), `buildcontext` (in-memory build contexts), `address` (unix:// and tcp:// daemon addresses), `command`
(`dmnc docker`, the discovery report for users).
"""
