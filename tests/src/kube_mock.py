# kmock (PyPI) as a stand-in Kubernetes API server on loopback, run by
# tests/src/kube_mock.rs. kmock is a FAKE: an in-memory store of JSON objects
# behind the Kubernetes REST paths. This script teaches it what ferry's tests
# and Spark's fabric8 client ask of a real API server:
#
# - TokenReview answers from a fixed table (kmock would store each review).
# - 410 Gone for a watch resumed from a resourceVersion this process never
#   issued (so a watcher that outlives one kmock process lists again).
# - resourceVersion, uid and creationTimestamp on objects that arrive
#   without them (fabric8 and kube-rs both read them).
# - Server-side apply: a PATCH with application/apply-patch+yaml creates the
#   object when it does not exist (Spark 4 applies its ConfigMaps and
#   Services that way), and otherwise sets it to what was applied, as for a
#   single field manager (no managedFields, no merging between managers).
# - JSON patch (application/json-patch+json, fabric8's edit()) and PUT.
# - Label and field selectors on list, watch and delete-collection (Spark
#   finds its executor pods by label, and its driver pod by metadata.name).
# - Watches over WebSocket (fabric8 upgrades every watch and blocks in
#   watch() until the upgrade succeeds), besides kmock's chunked HTTP.
# - The SparkApplication resource (sparkoperator.k8s.io/v1beta2), as if the
#   Kubeflow spark-operator's CRD were installed; no operator acts on it.
#
# No admission, RBAC, authentication, defaulting or controllers: nothing
# schedules or runs a pod here (tests/src/kubelet.rs does, and writes pod
# status back through this API as a kubelet would).
import asyncio, base64, copy, datetime, itertools, json, os, re, sys, uuid
import aiohttp, aiohttp.web
import kmock
import yaml

ACCOUNTS = {
    'eyJhbGciOiJub25lIn0.spark-submitter.sig': 'system:serviceaccount:spark:submitter',
    'eyJhbGciOiJub25lIn0.ci-publisher.sig': 'system:serviceaccount:ci:publisher',
    'eyJhbGciOiJub25lIn0.human.sig': 'alice@example.com',
}

EPOCH = 'epoch-%d' % os.getpid()
VERSIONS = itertools.count(1)
RESOURCES = {
    'v1/pods': 'Pod', 'v1/secrets': 'Secret', 'v1/configmaps': 'ConfigMap',
    'v1/services': 'Service', 'v1/persistentvolumeclaims': 'PersistentVolumeClaim',
    'v1/serviceaccounts': 'ServiceAccount', 'v1/events': 'Event',
    # The Kubeflow spark-operator's custom resource, as if its CRD were
    # installed (no operator runs here: nothing turns it into pods).
    'sparkoperator.k8s.io/v1beta2/sparkapplications': 'SparkApplication',
}


def parse_label_selector(text):
    """`a=b,c!=d,e in (x,y),f notin (z),g,!h` -> list of predicates on labels."""
    rules = []
    for part in re.findall(r'[^,(]+(?:\([^)]*\))?', text or ''):
        part = part.strip()
        if not part:
            continue
        m = re.fullmatch(r'(\S+)\s+(in|notin)\s+\(([^)]*)\)', part)
        if m:
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(',')}
            rules.append((lambda k, o, vs: lambda labels: (labels.get(k) in vs) == (o == 'in'))(key, op, values))
            continue
        m = re.fullmatch(r'([^=!\s]+)\s*(==|=|!=)\s*(\S*)', part)
        if m:
            key, op, value = m.groups()
            rules.append((lambda k, o, v: lambda labels: (labels.get(k) == v) == (o != '!='))(key, op, value))
            continue
        if part.startswith('!'):
            rules.append((lambda k: lambda labels: k not in labels)(part[1:].strip()))
        else:
            rules.append((lambda k: lambda labels: k in labels)(part))
    return rules


def parse_field_selector(text):
    """`metadata.name=x,status.phase!=Failed` -> predicates on the object."""
    rules = []
    for part in (text or '').split(','):
        m = re.fullmatch(r'\s*([\w.]+)\s*(==|=|!=)\s*(.*?)\s*', part)
        if not m:
            continue
        path, op, value = m.groups()
        def rule(obj, path=path, op=op, value=value):
            node = obj
            for key in path.split('.'):
                node = node.get(key) if isinstance(node, dict) else None
            return (str(node if node is not None else '') == value) == (op != '!=')
        rules.append(rule)
    return rules


def selected(request, obj):
    labels = (obj.get('metadata') or {}).get('labels') or {}
    return (all(rule(labels) for rule in parse_label_selector(request.params.get('labelSelector')))
            and all(rule(obj) for rule in parse_field_selector(request.params.get('fieldSelector'))))


def merge_patch_between(old, new):
    """A merge patch (None removes a key) that turns `old` into `new`."""
    patch = {}
    for key in old:
        if key not in new:
            patch[key] = None
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(old.get(key), dict):
            patch[key] = merge_patch_between(old[key], value)
        elif old.get(key) != value or key not in old:
            patch[key] = value
    return patch


def apply_json_patch(doc, ops):
    """RFC 6902 add/remove/replace/test, enough for fabric8's edit()."""
    doc = copy.deepcopy(doc)
    for op in ops:
        parts = [p.replace('~1', '/').replace('~0', '~') for p in op['path'].split('/')[1:]]
        parent = doc
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent.setdefault(part, {})
        last = parts[-1] if parts else None
        kind = op['op']
        if kind == 'test':
            continue
        if isinstance(parent, list):
            index = len(parent) if last == '-' else int(last)
            if kind == 'add':
                parent.insert(index, op['value'])
            elif kind == 'remove':
                parent.pop(index)
            elif kind == 'replace':
                parent[index] = op['value']
        else:
            if kind in ('add', 'replace'):
                parent[last] = op['value']
            elif kind == 'remove':
                parent.pop(last, None)
    return doc


class Api(kmock.KubernetesEmulator):
    known_versions = {EPOCH}

    def stamp(self, data, creating, namespace=None):
        """A fresh resourceVersion (unless the writer chose one), and on
        creation the namespace of the URL, a uid and creationTimestamp."""
        if not isinstance(data, dict):
            return
        meta = data.setdefault('metadata', {})
        if creating and namespace:
            meta.setdefault('namespace', namespace)
        if not meta.get('resourceVersion'):
            # Not digits alone: tests choose their own numeric versions.
            meta['resourceVersion'] = 'v%d' % next(VERSIONS)
        self.known_versions.add(meta['resourceVersion'])
        if data.get('kind') == 'Secret' and data.get('stringData'):
            # The API server folds stringData into data (base64) on write.
            encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.pop('stringData').items()}
            data['data'] = {**(data.get('data') or {}), **encoded}
        if creating:
            # A real API server defaults a new pod's status; Spark's
            # submission watcher reads it on the first event.
            if data.get('kind') == 'Pod':
                data.setdefault('status', {'phase': 'Pending'})
            meta.setdefault('uid', str(uuid.uuid4()))
            meta.setdefault('creationTimestamp',
                            datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%dT%H:%M:%SZ'))

    def stored(self, request, name=None):
        key = (request.resource, request.namespace, name or request.name)
        if key in self._objects and not self._objects[key].deleted:
            return self._objects[key]
        return None

    def matching(self, request):
        return [obj for (resource, namespace, _), obj in self._objects.items()
                if resource == request.resource and not obj.deleted
                and (request.namespace is None or namespace == request.namespace)
                and (request.name is None or obj.raw.get('metadata', {}).get('name') == request.name)
                and selected(request, obj.raw)]

    async def _handle(self, request):
        if request.resource is not None and request.resource.plural == 'tokenreviews':
            spec = (request.data or {}).get('spec', {})
            user = ACCOUNTS.get(spec.get('token'))
            status = ({'authenticated': True, 'user': {'username': user}} if user
                      else {'authenticated': False, 'error': 'invalid bearer token'})
            return aiohttp.web.json_response({
                'apiVersion': 'authentication.k8s.io/v1', 'kind': 'TokenReview',
                'metadata': {}, 'spec': spec, 'status': status}, status=201)
        if request.resource is None:
            return await super()._handle(request)

        content_type = request.headers.get('Content-Type', '')
        if request.data is None and request.text and 'yaml' in content_type:
            replace_data(request, yaml.safe_load(request.text))

        if request.action == kmock.action.WATCH:
            since = request.params.get('resourceVersion')
            if since and since not in self.known_versions and since != '0':
                gone = {'type': 'ERROR', 'object': {
                    'apiVersion': 'v1', 'kind': 'Status', 'metadata': {}, 'status': 'Failure',
                    'message': 'too old resource version: %s' % since,
                    'reason': 'Expired', 'code': 410}}
                return aiohttp.web.Response(text=json.dumps(gone) + '\n',
                                            content_type='application/json')
            if request.headers.get('Upgrade', '').lower() == 'websocket':
                return await self.websocket_watch(request)

        if request.method == kmock.method.POST and request.name is None:
            self.stamp(request.data, creating=True, namespace=request.namespace)
        elif request.method == kmock.method.PATCH and request.name is not None:
            current = self.stored(request)
            if 'apply-patch' in content_type and current is None:
                return await self.create_from(request)
            if 'apply-patch' in content_type:
                # One field manager per object in these tests: applying
                # again sets the object to what was applied (fields it no
                # longer names go), as a real server does for that manager.
                return await self.replace(request, current, fresh_version=True)
            if 'json-patch' in content_type and current is not None:
                new = apply_json_patch(current.raw, request.data or [])
                replace_data(request, merge_patch_between(current.raw, new))
            self.stamp(request.data, creating=False)
        elif request.method == kmock.method.PUT and request.name is not None:
            current = self.stored(request)
            if current is None:
                raise kmock.KubernetesObjectNotFoundError()
            return await self.replace(request, current)
        elif request.method == kmock.method.DELETE and request.name is None:
            return await self.delete_collection(request)
        return await super()._handle(request)

    async def replace(self, request, current, fresh_version=False):
        """The stored object becomes the request's body, keeping its uid
        and creationTimestamp (a MODIFIED event); a PUT may choose its
        resourceVersion, an apply gets a fresh one."""
        body = dict(request.data or {})
        meta = body.setdefault('metadata', {})
        for kept in ('uid', 'creationTimestamp', 'namespace', 'name'):
            if kept in current.raw.get('metadata', {}):
                meta[kept] = current.raw['metadata'][kept]
        if fresh_version:
            meta.pop('resourceVersion', None)
            # status is a subresource: an apply of the object leaves it be.
            if 'status' in current.raw and 'status' not in body:
                body['status'] = current.raw['status']
        self.stamp(body, creating=False)
        patch = merge_patch_between(current.raw, body)
        async with self._lock:
            current.patch(patch)
            await self._buses[request.resource].put({'type': 'MODIFIED', 'object': current.raw})
        return aiohttp.web.json_response(current.raw)

    async def create_from(self, request):
        body = dict(request.data or {})
        meta = body.setdefault('metadata', {})
        meta['name'] = request.name
        if request.namespace:
            meta['namespace'] = request.namespace
        self.stamp(body, creating=True)
        key = (request.resource, request.namespace, request.name)
        async with self._lock:
            if key in self._objects:
                self._objects[key].create(body)
            else:
                self._objects[key] = body
            raw = self._objects[key].raw
            await self._buses[request.resource].put({'type': 'ADDED', 'object': raw})
        return aiohttp.web.json_response(raw, status=201)

    async def delete_collection(self, request):
        async with self._lock:
            doomed = self.matching(request)
            for obj in doomed:
                raw = obj.raw
                obj.delete()
                await self._buses[request.resource].put({'type': 'DELETED', 'object': raw})
        return aiohttp.web.json_response({
            'apiVersion': 'v1', 'kind': 'List', 'metadata': {}, 'items': [o.last.raw for o in doomed]})

    async def websocket_watch(self, request):
        ws = aiohttp.web.WebSocketResponse(protocols=('v4.channel.k8s.io',))
        await ws.prepare(request._raw_request)
        bus = self._buses[request.resource]
        async with self._lock:
            mark = await bus.mark()
            initial = [{'type': 'ADDED', 'object': o.raw} for o in self.matching(request)]

        async def forward():
            for event in initial:
                await ws.send_str(json.dumps(event))
            async for event in bus.stream(since=mark):
                obj = event.get('object', {})
                meta = obj.get('metadata', {})
                if request.namespace is not None and meta.get('namespace') != request.namespace:
                    continue
                if request.name is not None and meta.get('name') != request.name:
                    continue
                if selected(request, obj):
                    await ws.send_str(json.dumps(event))

        sender = asyncio.ensure_future(forward())
        try:
            async for _ in ws:  # until the client closes
                pass
        finally:
            sender.cancel()
            await bus.unmark(mark)
        return ws

    async def _serve_list(self, request):
        listed = await super()._serve_list(request)
        listed['items'] = [item for item in listed['items'] if selected(request, item)]
        listed['metadata']['resourceVersion'] = EPOCH
        resource = request.resource
        group_version = '/'.join(p for p in (resource.group, resource.version) if p)
        listed.setdefault('kind', RESOURCES.get(group_version + '/' + (resource.plural or ''), '') + 'List')
        listed.setdefault('apiVersion', group_version or 'v1')
        return listed

    async def _serve_watch(self, request):
        async for event in super()._serve_watch(request):
            if isinstance(event, dict) and not selected(request, event.get('object', {})):
                continue
            yield event


def replace_data(request, data):
    """kmock's requests are frozen; its handlers read `data` (the body as
    kmock would have parsed it had it been a JSON merge patch)."""
    object.__setattr__(request, 'data', data)


async def main(port):
    async with Api() as api, kmock.Server(api, port=port):
        for path, kind in RESOURCES.items():
            api.resources[path] = kmock.ResourceInfo(
                kind=kind, namespaced=True,
                verbs={'get', 'list', 'watch', 'create', 'update', 'patch', 'delete', 'deletecollection'})
        print('kmock listening on', port, flush=True)
        await asyncio.Event().wait()

asyncio.run(main(int(sys.argv[1])))
