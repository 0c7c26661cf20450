# Types for the compiled build of _engine.py (Cython pure-Python mode).
# Every record is a final cdef class with typed fields, so the hot paths
# (enqueue, offer, accept, complete, an agent freeing up) run as C field
# accesses and direct calls. Internal fields are ``public`` only so that
# untyped code (comprehensions, introspection) can still read them.
cimport cython
from acd_core._queue cimport IndexedHeap

cdef int P_LOGGED_OUT, P_READY, P_OFFERED, P_BUSY, P_WRAPUP, P_BREAK, P_DISCONNECTED
cdef int T_NEW, T_QUEUED, T_OFFERED, T_ASSIGNED, T_ENDED
cdef int S_LONGEST_IDLE, S_FEWEST_ANSWERED, S_LEAST_TALK, S_ROUND_ROBIN, S_TOP_DOWN
cdef int S_MOST_SKILLED, S_RANDOM, S_RING_ALL, S_RING_PROGRESSIVE
cdef int K_OFFER, K_STEP, K_STICKY, K_RING, K_WRAPUP, K_GRACE, K_RETRY
cdef int W_WAITING, W_PRE, W_RINGING
cdef int C_OFFERED, C_ANSWERED, C_ANSWERED_SL, C_ABANDONED, C_ABANDONED_SL, C_WAIT_SUM, C_WAITED
cdef int C_HANDLED, C_HANDLE_SUM, C_CANCELLED, C_MERGED, C_ABANDON_WAIT_SUM, C_STAFFED_S, NCOUNT
cdef int MAX_CHANNELS, MAX_SLOTS
cdef double INF, NAN

cdef class _Queue
cdef class _Class
cdef class _Bucket
cdef class _Agent
cdef class _Timer
cdef class _Cell


cdef class Event:
    cdef readonly double at

@cython.final
cdef class TaskQueued(Event):
    cdef readonly object task_id, queue, cls
    cdef readonly double priority, arrival

@cython.final
cdef class OfferCreated(Event):
    cdef readonly long long offer_id
    cdef readonly object task_id, agent_id
    cdef readonly double expires_at

@cython.final
cdef class OfferWithdrawn(Event):
    cdef readonly long long offer_id
    cdef readonly object task_id, agent_id, reason

@cython.final
cdef class TaskAssigned(Event):
    cdef readonly object task_id, agent_id
    cdef readonly long long offer_id
    cdef readonly double wait

@cython.final
cdef class TaskRestored(Event):
    cdef readonly object task_id, agent_id

@cython.final
cdef class TaskEscalated(Event):
    cdef readonly object task_id
    cdef readonly int step
    cdef readonly object queue, reason

@cython.final
cdef class TaskMerged(Event):
    cdef readonly object task_id, into, incident_key
    cdef readonly double priority

@cython.final
cdef class TaskReprioritised(Event):
    cdef readonly object task_id, cls
    cdef readonly double priority

@cython.final
cdef class TaskAbandoned(Event):
    cdef readonly object task_id
    cdef readonly double wait

@cython.final
cdef class TaskCancelled(Event):
    cdef readonly object task_id, reason

@cython.final
cdef class TaskCompleted(Event):
    cdef readonly object task_id, agent_id, disposition
    cdef readonly double handle_time

@cython.final
cdef class TaskRequeued(Event):
    cdef readonly object task_id, agent_id, reason

@cython.final
cdef class AgentStateChanged(Event):
    cdef readonly object agent_id, old, new, reason

@cython.final
cdef class WrapupEnded(Event):
    cdef readonly object agent_id, reason


@cython.locals(ev=TaskQueued)
cdef TaskQueued _ev_queued(double at, object task_id, object queue, object cls, double priority, double arrival)
@cython.locals(ev=OfferCreated)
cdef OfferCreated _ev_offer(double at, long long offer_id, object task_id, object agent_id, double expires_at)
@cython.locals(ev=OfferWithdrawn)
cdef OfferWithdrawn _ev_withdrawn(double at, long long offer_id, object task_id, object agent_id, object reason)
@cython.locals(ev=TaskAssigned)
cdef TaskAssigned _ev_assigned(double at, object task_id, object agent_id, long long offer_id, double wait)
@cython.locals(ev=TaskCompleted)
cdef TaskCompleted _ev_completed(double at, object task_id, object agent_id, object disposition, double handle_time)
@cython.locals(ev=AgentStateChanged)
cdef AgentStateChanged _ev_state(double at, object agent_id, object old, object new, object reason)


@cython.final
cdef class Task:
    # set by the caller
    cdef public object id, queue, cls, skills, channel, tenant, vehicle, incident_key, attributes
    cdef public double priority, arrival, deadline
    # owned by the engine
    cdef readonly int state
    cdef public _Queue _q            # origin queue (statistics, classes, steps)
    cdef public _Class _c
    cdef public _Cell _cell          # statistics cell of the class it arrived in
    cdef public _Queue _loc          # where it waits now (escalation may move it)
    cdef public _Bucket _bucket      # its current target bucket
    cdef public Py_ssize_t _handle   # in _bucket.tasks, or -1
    cdef public Py_ssize_t _pre_handle  # in _bucket.pre (a pre-empting class), or -1
    cdef public Py_ssize_t _ring_handle  # in _bucket.ringing (ring-all, on offer), or -1
    cdef public Py_ssize_t _wait_handle  # in its statistics cell's waiting set, or -1
    cdef public int _step
    cdef public _Timer _step_timer, _sticky_timer, _ring_timer
    cdef public _Agent _sticky
    cdef public list _offers
    cdef public _Agent _agent
    cdef public set _declined
    cdef public tuple _req
    cdef public int _ch
    cdef public long long _seq
    cdef public double _k1, _k2, _assigned_at
    cdef public bint _answered


@cython.final
cdef class _Timer:
    cdef public int kind
    cdef public object obj
    cdef public double deadline
    cdef public Py_ssize_t handle


@cython.final
cdef class _Offer:
    cdef public long long id
    cdef public Task task
    cdef public _Agent agent
    cdef public double expires_at
    cdef public _Timer timer


@cython.final
cdef class _Class:
    cdef public int index
    cdef public object name
    cdef public double priority, target, threshold
    cdef public bint preempt


@cython.final
cdef class _Cell:
    cdef double totals[13]     # NCOUNT counters since start
    cdef double ring[780]      # MAX_SLOTS slots of NCOUNT counters
    cdef public double slot_len
    cdef public long long nslots, slot
    cdef public IndexedHeap waiting

    @cython.locals(s=cython.longlong)
    cdef Py_ssize_t base(self, double now) except -1
    @cython.locals(base=Py_ssize_t)
    cpdef add(self, double now, int idx, double value)
    @cython.locals(base=Py_ssize_t)
    cdef answered(self, double now, double wait, bint within)
    @cython.locals(base=Py_ssize_t)
    cdef handled(self, double now, double handle)
    @cython.locals(i=cython.int)
    cpdef list since_start(self)
    @cython.locals(n=cython.longlong, k=cython.longlong, base=cython.longlong, i=cython.longlong)
    cdef _advance(self, long long s)


@cython.final
cdef class _Queue:
    cdef public int index
    cdef public dict buckets, classes, agent_order, members
    cdef public long long staffed
    cdef public double staffed_t
    cdef public _Cell qcell
    cdef public list cells, class_list
    cdef public object config, name, tenant
    cdef public bint shared, edf, preempt
    cdef public int strategy, max_no_answer
    cdef public double aging, offer_timeout, wrapup, sticky_wait, sticky_window, ring_step, retry_delay
    cdef public tuple steps, req
    cdef public _Class default


@cython.final
cdef class _Bucket:
    cdef public _Queue q
    cdef public int ch
    cdef public tuple req
    cdef public object agents
    cdef public IndexedHeap tasks, pre, ringing, avail, wrap
    cdef public list members


@cython.final
cdef class _Member:
    cdef public _Agent agent
    cdef public _Bucket bucket
    cdef public Py_ssize_t avail, wrap
    cdef public double k1, k2, s1, s2, order, score


@cython.final
cdef class _Agent:
    cdef public long long index
    cdef public int presence, pstate
    cdef public bint answer_keyed
    cdef public int nch, wrap_entries
    cdef public object reason, config, id, tenants
    cdef public double state_since, talk_time, idle_since, wrap_until, wrapup
    cdef double time_in[7]   # seconds spent in each public state (STATE_NAMES)
    cdef public list members
    cdef int load[16]   # tasks in hand + pending offers, per channel id (MAX_CHANNELS)
    cdef int cap[16]
    cdef public set queues
    cdef public dict tasks, offers, skills
    cdef public long long total_load, offered, answered, no_answer, handled, last_offer
    cdef public _Timer wrap_timer, grace_timer


@cython.final
cdef class Router:
    cdef dict _queues, _agents, _tasks, _offers, _incidents, _sticky, _listed, _skills, _channels
    cdef list _channel_names
    cdef IndexedHeap _timers
    cdef long long _next_offer, _seq, _agent_seq, _npre, _nringing
    cdef object _rng
    cdef double _window, _slot_len, _start, _sticky_max
    cdef int _slots
    cdef bint _sticky_on

    cdef int _channel_id(self, object name) except -1
    @cython.locals(i=cython.int, q=_Queue, b=_Bucket, ch=cython.int)
    cdef _apply_agent(self, _Agent agent, object config, double now)
    @cython.locals(agent=_Agent, lvl=cython.long)
    cdef bint _eligible(self, _Agent agent, _Bucket b) except -1
    @cython.locals(agent=_Agent)
    cdef bint _valid(self, _Member m) except -1
    @cython.locals(m=_Member)
    cdef _Member _clean_top(self, _Bucket b)
    @cython.locals(i=cython.int)
    cdef dict _loads(self, _Agent a)
    @cython.locals(i=cython.int)
    cdef list _time_in(self, _Agent a)
    @cython.locals(b=_Bucket)
    cdef _Bucket _bucket(self, _Queue q, int ch, tuple req, object agents)
    @cython.locals(q=_Queue, loc=_Queue, req=tuple, agents=object)
    cdef _Bucket _target(self, Task t)
    @cython.locals(loc=_Queue)
    cdef _keys(self, Task t)
    @cython.locals(b=_Bucket)
    cdef _file(self, Task t, double now)
    @cython.locals(b=_Bucket)
    cdef _pre_sync(self, Task t)
    cdef _unfile(self, Task t)
    @cython.locals(agent=_Agent, s=cython.int)
    cdef _agent_key(self, _Member m)
    @cython.locals(agent=_Agent, b=_Bucket, spare=cython.bint, k1=cython.double, k2=cython.double)
    cdef _place(self, _Member m)
    @cython.locals(p=cython.int)
    cdef int _pstate(self, _Agent agent)
    @cython.locals(m=_Member)
    cdef _touch(self, _Agent agent, double now, object reason, list events)
    @cython.locals(ch=cython.int)
    cdef bint _has_room(self, _Agent agent) except -1
    @cython.locals(new=cython.int, old=cython.int)
    cdef _report(self, _Agent agent, double now, object reason, list events)
    @cython.locals(q=_Queue, staffed_before=cython.bint, staffed_after=cython.bint, delta=cython.int)
    cdef _set_presence(self, _Agent agent, int presence, double now)
    cdef _staff(self, _Queue q, double now, int delta)
    @cython.locals(timer=_Timer)
    cdef _Timer _arm(self, int kind, object obj, double deadline)
    cdef _disarm(self, _Timer timer)

    @cython.locals(timer=_Timer, t=cython.double, kind=cython.int, agent=_Agent)
    cpdef list handle_timer(self, double now)
    cpdef object next_deadline(self)

    @cython.locals(q=_Queue, c=_Class)
    cdef _Queue _prepare(self, Task task, double now)
    @cython.locals(existing=Task, q=_Queue, cell=_Cell)
    cpdef list enqueue(self, Task task, double now)
    @cython.locals(c=_Class, e=_Class, cell=_Cell)
    cdef _merge(self, Task existing, Task task, double now, list events)
    @cython.locals(agent=_Agent, b=_Bucket)
    cdef _find_sticky(self, Task task, _Queue q, double now)
    cdef _remember(self, Task task, _Agent agent, double now)
    cdef _hand_to(self, Task task, _Agent agent, double now)
    @cython.locals(steps=tuple)
    cdef _start_step(self, Task task, int i, double now)
    @cython.locals(queued=cython.bint, b=_Bucket)
    cdef _step_timeout(self, Task task, double now, list events)
    cdef _sticky_timeout(self, Task task, double now, list events)

    @cython.locals(m=_Member, found=_Member)
    cdef _Member _best_agent(self, _Bucket b, Task task)
    @cython.locals(b=_Bucket, q=_Queue, m=_Member, agent=_Agent)
    cdef _dispatch_task(self, Task task, double now, list events)
    @cython.locals(m=_Member, agent=_Agent)
    cdef _preempt_for(self, Task task, _Bucket b, double now, list events)
    @cython.locals(t=Task)
    cdef bint _preempt(self, _Agent agent, double now, list events) except -1
    @cython.locals(t=Task, heap=IndexedHeap)
    cdef Task _first_undeclined(self, _Bucket b, _Agent agent, bint pre)
    @cython.locals(best=Task, t=Task, m=_Member, b=_Bucket, r1=cython.double, r2=cython.double,
                   best_r1=cython.double, best_r2=cython.double, best_seq=cython.longlong,
                   heap=IndexedHeap)
    cdef Task _best_task(self, _Agent agent, double now, int which)
    @cython.locals(t=Task)
    cdef _dispatch_agent(self, _Agent agent, double now, list events)
    @cython.locals(t=Task, heap=IndexedHeap)
    cdef Task _first_joinable(self, _Bucket b, _Agent agent)
    cdef _ring_add(self, Task task)
    cdef _unring(self, Task task)
    @cython.locals(q=_Queue, oid=cython.longlong, offer=_Offer, old=cython.int)
    cdef _offer(self, Task task, _Agent agent, double now, list events)
    @cython.locals(b=_Bucket, m=_Member)
    cdef _widen(self, Task task, double now, list events)
    @cython.locals(o=_Offer)
    cdef bint _may_join(self, Task task, _Agent agent) except -1
    @cython.locals(m=_Member, found=_Member)
    cdef _Member _next_candidate(self, _Bucket b, Task task)
    @cython.locals(b=_Bucket, found=_Member)
    cdef _ring_next(self, Task task, double now, list events)

    @cython.locals(task=Task, agent=_Agent, old=cython.int)
    cdef _drop_offer(self, _Offer offer, double now, object reason, list events)
    cdef _refile(self, Task task, double now)
    @cython.locals(t=Task)
    cdef _redispatch(self, list tasks, double now, list events)
    cdef _retry(self, Task task, double now, list events)
    @cython.locals(offer=_Offer, task=Task, agent=_Agent, old=cython.int, wait=cython.double,
                   cell=_Cell, other=_Offer)
    cpdef list accept(self, object offer_id, double now)
    @cython.locals(offer=_Offer)
    cpdef list reject(self, object offer_id, double now)
    @cython.locals(task=Task, agent=_Agent, q=_Queue, back=list)
    cdef _offer_failed(self, _Offer offer, double now, object reason, list events)

    @cython.locals(task=Task, agent=_Agent, old=cython.int, talk=cython.double, wrap=cython.double,
                   cell=_Cell)
    cpdef list complete(self, object task_id, double now, object disposition=*)
    cdef _release(self, Task task, _Agent agent)
    @cython.locals(timer=_Timer)
    cdef _end(self, Task task)
    @cython.locals(offer=_Offer)
    cdef _withdraw_all(self, Task task, double now, object reason, list events)
    @cython.locals(task=Task, wait=cython.double, cell=_Cell)
    cpdef list abandon(self, object task_id, double now)
    @cython.locals(task=Task, agent=_Agent, cell=_Cell)
    cpdef list cancel(self, object task_id, double now, object reason=*)
    @cython.locals(b=_Bucket)
    cdef _rekey(self, Task task, double now, list events)
    @cython.locals(cell=_Cell)
    cdef _requeue(self, Task task, _Agent agent, double now, object reason, list events)

    @cython.locals(old=cython.int)
    cdef _go_break(self, _Agent agent, double now, object reason, list events, list back)
    @cython.locals(offer=_Offer, task=Task)
    cdef _drop_agent_offers(self, _Agent agent, double now, list events, list back)
    cdef _withdraw_agent_offers(self, _Agent agent, double now, list events, list back)
    @cython.locals(old=cython.int)
    cdef _end_wrapup(self, _Agent agent, double now, object reason, list events)
    @cython.locals(old=cython.int, t=Task, back=list)
    cdef _logout(self, _Agent agent, double now, object reason, object requeue_reason, list events)
